package grpcserver

import (
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"

	"github.com/campaignmesh/campaignmesh/internal/platform/access"
)

// quietInternal logs a successful internal call (mesh services polling ListRevocations every
// second, verifying keys, delivering audit records) at debug level: at info they would drown the
// calls people make. Failures keep their level.
func quietInternal(lvl logging.Level, fields []any) logging.Level {
	return quietCalls(nil)(lvl, fields)
}

// quietCalls returns the level rule of the call logs: a successful call of an internal method,
// or of one of the hot methods (WithQuietCalls), logs at debug; every other line keeps its level,
// so failures and denials are always logged.
func quietCalls(hot map[string]bool) func(lvl logging.Level, fields []any) logging.Level {
	return func(lvl logging.Level, fields []any) logging.Level {
		if lvl != logging.LevelInfo {
			return lvl
		}
		var svc, method, code string
		for i := 0; i+1 < len(fields); i += 2 {
			v, _ := fields[i+1].(string)
			switch fields[i] {
			case "grpc.service":
				svc = v
			case "grpc.method":
				method = v
			case "grpc.code":
				code = v
			}
		}
		full := "/" + svc + "/" + method
		if code == "OK" && svc != "" && (hot[full] || access.Internal(full)) {
			return logging.LevelDebug
		}
		return lvl
	}
}
