package servicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/campaignmesh/campaignmesh/gateway"
)

// REST calls a service's RPCs over REST through the real gateway handler (grpc-gateway with
// the gateway's error mapping), as each RPC's google.api.http rule maps it: the authorization
// matrices run every RPC over gRPC and over REST.
type REST struct {
	tb      testing.TB
	service protoreflect.ServiceDescriptor
	srv     *httptest.Server
}

// NewREST serves backend through a gateway handler on a loopback HTTP server until the test
// ends; service names the RPCs' descriptors.
func NewREST(tb testing.TB, service protoreflect.ServiceDescriptor, backend gateway.Backend) *REST {
	tb.Helper()
	gw, err := gateway.New(context.Background(), gateway.Config{Logger: slog.New(slog.DiscardHandler)}, []gateway.Backend{backend})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	tb.Cleanup(srv.Close)
	return &REST{tb: tb, service: service, srv: srv}
}

// pathParam is a field of the request in an HTTP rule's path: {id}, {campaign.id}.
var pathParam = regexp.MustCompile(`\{([a-z_.]+)\}`)

// Do sends req as method's HTTP rule says, with token as its bearer credential (none when
// empty), and returns the HTTP status and body. A server stream's body is read to its end.
func (r *REST) Do(method string, req proto.Message, token string) (int, []byte) {
	tb := r.tb
	tb.Helper()
	md := r.service.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		tb.Fatalf("%s has no method %s", r.service.FullName(), method)
	}
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	var verb, path string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		verb, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		verb, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Patch:
		verb, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Delete:
		verb, path = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Put:
		verb, path = http.MethodPut, p.Put
	default:
		tb.Fatalf("%s: no supported HTTP rule (%v)", method, rule)
	}
	msg := req.ProtoReflect()
	for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
		path = strings.Replace(path, m[0], url.PathEscape(fieldText(msg, strings.Split(m[1], "."))), 1)
	}
	var body io.Reader
	switch rule.GetBody() {
	case "":
	case "*":
		data, _ := protojson.Marshal(req)
		body = bytes.NewReader(data)
	default:
		fd := msg.Descriptor().Fields().ByName(protoreflect.Name(rule.GetBody()))
		data, _ := protojson.Marshal(msg.Get(fd).Message().Interface())
		body = bytes.NewReader(data)
	}
	hreq, err := http.NewRequest(verb, r.srv.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.srv.Client().Do(hreq)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, data
}

// Call is Do answering the gRPC code the gateway's JSON error carries (OK for HTTP 200). A
// server stream's error comes as {"error": {…}}: before the stream starts with its HTTP status,
// after it in its last line of a 200 answer.
func (r *REST) Call(method string, req proto.Message, token string) codes.Code {
	r.tb.Helper()
	status, data := r.Do(method, req, token)
	var e struct {
		Code  *int `json:"code"`
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if status == http.StatusOK {
		lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
		if last := lines[len(lines)-1]; json.Unmarshal(last, &e) == nil && e.Error != nil {
			return codes.Code(e.Error.Code)
		}
		return codes.OK
	}
	if err := json.Unmarshal(data, &e); err == nil && e.Code != nil {
		return codes.Code(*e.Code)
	}
	if e.Error != nil { // a server stream's error, as grpc-gateway writes it
		return codes.Code(e.Error.Code)
	}
	r.tb.Fatalf("%s over REST: HTTP %d without a JSON error: %s", method, status, data)
	return codes.Unknown
}

// fieldText is the text of the (nested) field path names in msg.
func fieldText(msg protoreflect.Message, path []string) string {
	for i, name := range path {
		fd := msg.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return ""
		}
		if i == len(path)-1 {
			return msg.Get(fd).String()
		}
		msg = msg.Get(fd).Message()
	}
	return ""
}

// Post sends body to path (a plain gateway handler's route, such as POST /v1/contacts:import)
// with contentType and token as its bearer credential (none when empty), and returns the HTTP
// status and body.
func (r *REST) Post(path, contentType string, body io.Reader, token string) (int, []byte) {
	r.tb.Helper()
	hreq, err := http.NewRequest(http.MethodPost, r.srv.URL+path, body)
	if err != nil {
		r.tb.Fatal(err)
	}
	hreq.Header.Set("Content-Type", contentType)
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.srv.Client().Do(hreq)
	if err != nil {
		r.tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		r.tb.Fatal(err)
	}
	return resp.StatusCode, data
}

// URL is the gateway's base URL.
func (r *REST) URL() string { return r.srv.URL }
