package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Errors at the edge. The backends answer with statuses made by apperr, which carry a
// google.rpc.ErrorInfo of the CampaignMesh domain and are safe to show as they are. Any other
// status was made by a transport or a parser — grpc-go on either side of the gateway (a
// message over a size limit, a backend that cannot be reached, a request the gateway could
// not marshal), or grpc-gateway reading the request — and its text ("grpc: …", "connection
// error: desc = …", "strconv.ParseInt: …", "proto: (line 1:27) …") is not for callers:
// cleanStatus turns it into a plain message for its code, naming the field for bad input. An
// INTERNAL, UNKNOWN or DATA_LOSS status of that kind is masked by apperr with a new ref, which
// the gateway logs with the status it replaced (a backend's own masked answer, which carries
// the backend's ErrorInfo, passes through with the backend's ref: the backend logged it).

// generic is what callers see for a code whose status came from a transport.
var generic = map[codes.Code]string{
	codes.Canceled:          "request canceled",
	codes.Unknown:           "internal error",
	codes.DeadlineExceeded:  "deadline exceeded",
	codes.ResourceExhausted: "message too large or limit exceeded",
	codes.Unimplemented:     "method not implemented",
	codes.Internal:          "internal error",
	codes.Unavailable:       "service unavailable; retry later",
	codes.DataLoss:          "internal error",
}

// Parser messages of grpc-gateway and protojson that name the field at fault.
var (
	queryFieldText = regexp.MustCompile(`^parsing field "([^"]+)"`)
	pathFieldText  = regexp.MustCompile(`parameter: ([A-Za-z0-9_.]+)`)
	// protojson puts a random space or no-break space after "proto:" so that nobody matches its
	// text exactly; this only names the field when it can and falls back to "body".
	jsonFieldText = regexp.MustCompile(`^proto:.*invalid value for [a-z0-9 ]+ field ([A-Za-z0-9_]+)`)
)

// fromBackend reports a status made by apperr (ours to show).
func fromBackend(st *status.Status) bool {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == apperr.Domain {
			return true
		}
	}
	return false
}

// cleanStatus returns the status a caller may see for st, and the ref to log st under when
// it was masked.
func cleanStatus(st *status.Status) (clean *status.Status, ref string) {
	if st.Code() == codes.OK || fromBackend(st) {
		return st, ""
	}
	msg := st.Message()
	if st.Code() == codes.InvalidArgument {
		var v apperr.Violations
		switch {
		case queryFieldText.MatchString(msg):
			v.Add(queryFieldText.FindStringSubmatch(msg)[1], "is not a valid value for its type")
		case pathFieldText.MatchString(msg):
			v.Add(pathFieldText.FindStringSubmatch(msg)[1], "is not a valid value for its type")
		case jsonFieldText.MatchString(msg):
			v.Add(jsonFieldText.FindStringSubmatch(msg)[1], "is not a valid value for its type")
		default:
			v.Add("body", "is not valid JSON for this request")
		}
		s, _ := apperr.ToStatus(v.Err())
		return s, ""
	}
	switch st.Code() {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return apperr.ToStatus(st.Err()) // masked there, like in every service
	}
	if g, ok := generic[st.Code()]; ok && transportText(msg) {
		return status.New(st.Code(), g), ""
	}
	if transportText(msg) {
		return status.New(st.Code(), strings.ToLower(strings.ReplaceAll(st.Code().String(), "_", " "))), ""
	}
	return st, ""
}

// cleanLogged is cleanStatus for err, logging err in full under the ref of a masked answer.
func cleanLogged(ctx context.Context, logger *slog.Logger, where string, err error) *status.Status {
	st, ref := cleanStatus(status.Convert(err))
	if ref != "" {
		logger.ErrorContext(ctx, "internal error", "method", where, "ref", ref, "err", err.Error())
	}
	return st
}

func transportText(msg string) bool {
	for _, s := range []string{"grpc", "transport", "desc =", "proto:", "strconv.", "parsing ", "connection", "http2"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// errorHandler answers REST errors: the cleaned status, and Retry-After when the backend
// asked the caller to wait (google.rpc.RetryInfo; a `retry-after` header from the backend is
// already forwarded by the header matcher).
func errorHandler(logger *slog.Logger) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		st := cleanLogged(ctx, logger, r.Method+" "+r.URL.Path, err)
		setRetryAfter(ctx, w, st)
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, st.Err())
	}
}

// streamErrorHandler cleans the status that ends a REST server stream (sent as its last line,
// {"error": …}, or as the whole answer when nothing was sent yet) as errorHandler cleans any
// other answer: an export download or a live metrics stream must not carry transport text.
func streamErrorHandler(logger *slog.Logger) runtime.StreamErrorHandlerFunc {
	return func(ctx context.Context, err error) *status.Status {
		method, _ := runtime.RPCMethod(ctx)
		return cleanLogged(ctx, logger, method, err)
	}
}

func setRetryAfter(ctx context.Context, w http.ResponseWriter, st *status.Status) {
	if md, ok := runtime.ServerMetadataFromContext(ctx); ok && len(md.HeaderMD.Get("retry-after")) > 0 {
		return
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(ri.GetRetryDelay().AsDuration())))
			return
		}
	}
}

// outgoingHeader forwards backend response metadata as grpc-gateway does by default
// (Grpc-Metadata-<key>), except retry-after, which is HTTP's own Retry-After.
func outgoingHeader(key string) (string, bool) {
	if key == "retry-after" {
		return "Retry-After", true
	}
	return runtime.MetadataHeaderPrefix + key, true
}

// writeAppError answers a request the gateway refuses itself, in grpc-gateway's error shape.
func writeAppError(w http.ResponseWriter, _ *http.Request, err error) {
	st, _ := apperr.ToStatus(err)
	body, merr := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(st.Proto())
	if merr != nil {
		writeJSONError(w, http.StatusInternalServerError, codes.Internal, "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	_, _ = w.Write(append(body, '\n'))
}
