package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// MaxJSONDepth bounds how deeply a REST body's JSON may nest. Event properties are the only
// free-form JSON; nothing legitimate comes near it, and a Struct nests three protobuf
// messages a JSON level, far below protobuf's own limit.
const MaxJSONDepth = 64

// restInput checks what grpc-gateway would otherwise pass on unchecked or answer with parser
// text: the URL's path and query must be valid UTF-8 (a proto string field cannot hold
// anything else, and the gateway's own marshal of the request would fail with INTERNAL), and a
// body must be JSON, valid UTF-8, nested at most MaxJSONDepth deep and — except on
// client-streaming routes, whose bodies are a sequence of messages — a single value with
// nothing after it. A refusal is INVALID_ARGUMENT / 400 naming the parameter or "body".
// Everything else about the input (NUL bytes, field rules) is for the backend to decide.
type restInput struct {
	// streams holds "METHOD pattern" of client-streaming routes.
	streams map[string]bool
}

func newRESTInput(backends []Backend) restInput {
	in := restInput{streams: map[string]bool{}}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for _, b := range backends {
			if string(fd.Package()) != b.Package {
				continue
			}
			for i := 0; i < fd.Services().Len(); i++ {
				methods := fd.Services().Get(i).Methods()
				for j := 0; j < methods.Len(); j++ {
					if md := methods.Get(j); md.IsStreamingClient() {
						in.addStream(md)
					}
				}
			}
		}
		return true
	})
	return in
}

var pathVariable = regexp.MustCompile(`\{([^}=]+)\}`)

func (in restInput) addStream(md protoreflect.MethodDescriptor) {
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	rules := append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...)
	for _, r := range rules {
		for method, path := range map[string]string{
			http.MethodGet: r.GetGet(), http.MethodPost: r.GetPost(), http.MethodPut: r.GetPut(),
			http.MethodPatch: r.GetPatch(), http.MethodDelete: r.GetDelete(),
		} {
			if path != "" {
				// runtime.Pattern.String spells a plain variable {id} as {id=*}.
				in.streams[method+" "+pathVariable.ReplaceAllString(path, "{$1=*}")] = true
			}
		}
	}
}

// middleware runs the checks on every request that matched a route.
func (in restInput) middleware(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
		if err := in.check(r); err != nil {
			writeAppError(w, r, err)
			return
		}
		next(w, r, pathParams)
	}
}

func (in restInput) check(r *http.Request) error {
	var v apperr.Violations
	if !utf8.ValidString(r.URL.Path) {
		v.Add("path", "is not valid UTF-8")
		return v.Err()
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		v.Add("query", "is not a well-formed URL query")
		return v.Err()
	}
	for key, values := range query {
		if !utf8.ValidString(key) {
			v.Add("query", "has a parameter name that is not valid UTF-8")
			return v.Err()
		}
		for _, val := range values {
			if !utf8.ValidString(val) {
				v.Add(key, "is not valid UTF-8")
				return v.Err()
			}
		}
	}
	if r.Body == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	body, err := io.ReadAll(r.Body) // already read into memory and bounded by limitBody
	if err != nil {
		v.Add("body", "could not be read")
		return v.Err()
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	pattern, _ := runtime.HTTPPattern(r.Context())
	if reason := checkJSON(body, in.streams[r.Method+" "+pattern.String()]); reason != "" {
		v.Add("body", "%s", reason)
		return v.Err()
	}
	return nil
}

// checkJSON returns why body is not acceptable, or "". An empty body is acceptable (the
// request's fields take their defaults); sequence allows several values one after another.
// One pass over the bytes: grpc-gateway's decoder parses the body anyway and answers a syntax
// error itself (cleaned to "body"), but it reads only the first value and nests as deep as it
// is told, so depth and trailing data are decided here.
func checkJSON(body []byte, sequence bool) string {
	if !utf8.Valid(body) {
		return "is not valid UTF-8"
	}
	deepest, end := scanJSON(body)
	switch {
	case deepest > MaxJSONDepth:
		return "nests deeper than " + strconv.Itoa(MaxJSONDepth) + " levels"
	case !sequence && end >= 0 && len(bytes.TrimSpace(body[end:])) > 0:
		return "has data after the JSON value"
	}
	return ""
}

// scanJSON returns the deepest nesting of objects and arrays in b (skipping strings) and the
// offset just after the first top-level object or array, or -1 when b does not start with one
// that closes.
func scanJSON(b []byte) (deepest, end int) {
	depth, inString, escaped := 0, false, false
	end = -1
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		end = len(b) // a scalar or nothing: the decoder judges it
	}
	for i, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
			if depth == 0 && end < 0 {
				end = i + 1
			}
		}
	}
	return deepest, end
}

// restMuxOptions are the grpc-gateway options that keep bad input and transport errors at the
// edge: input checks on every route, cleaned errors with Retry-After, and routing errors
// answered with their own HTTP status (grpc-gateway would answer 405 as 501).
func restMuxOptions(backends []Backend, logger *slog.Logger) []runtime.ServeMuxOption {
	return []runtime.ServeMuxOption{
		runtime.WithMiddlewares(newRESTInput(backends).middleware),
		runtime.WithErrorHandler(errorHandler(logger)),
		runtime.WithStreamErrorHandler(streamErrorHandler(logger)),
		runtime.WithOutgoingHeaderMatcher(outgoingHeader),
		runtime.WithRoutingErrorHandler(routingError),
	}
}

func routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, httpStatus int) {
	code := codes.InvalidArgument
	switch httpStatus {
	case http.StatusNotFound:
		code = codes.NotFound
	case http.StatusMethodNotAllowed:
		code = codes.Unimplemented
	default:
		httpStatus = http.StatusBadRequest
	}
	writeJSONError(w, httpStatus, code, strings.ToLower(http.StatusText(httpStatus)))
}
