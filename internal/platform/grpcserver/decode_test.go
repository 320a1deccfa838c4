package grpcserver_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	meshtestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/meshtest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// rawCodec sends hand-made wire bytes, as a hostile client would.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// wantInvalidField checks err is a clean INVALID_ARGUMENT naming field, with no transport text.
func wantInvalidField(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("error = %v; want INVALID_ARGUMENT", err)
	}
	if strings.Contains(st.Message(), "grpc") || strings.Contains(st.Message(), "proto:") {
		t.Fatalf("message carries transport text: %q", st.Message())
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if len(fields) != 1 || !strings.HasPrefix(fields[0], field) {
		t.Fatalf("field violations = %v; want %s", fields, field)
	}
}

// stringField encodes field 1 (a string) with raw bytes.
func stringField(b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), b)
}

func TestUndecodableRequestsAreInvalidArgument(t *testing.T) {
	h := start(t)
	creds := credentials.NewTLS(mtlstest.Source(t, h.ca, "gateway").ClientConfig("auth"))
	conn := h.conn(t, &creds)
	gw := meshtestv1.NewProbeServiceClient(conn)
	for _, tc := range []struct {
		name, field string
		body        []byte
	}{
		{"invalid utf-8 in a string", "text", stringField([]byte("ab\xffcd"))},
		{"truncated string", "text", protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.BytesType), 10)},
		{"garbage", "request", []byte{0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out []byte
			err := conn.Invoke(context.Background(), meshtestv1.ProbeService_Public_FullMethodName, &tc.body, &out, grpc.ForceCodecV2(rawCodec{}))
			wantInvalidField(t, err, tc.field)
		})
	}
	// The server goes on answering well-formed requests.
	if _, err := gw.Public(context.Background(), &meshtestv1.ProbeRequest{Text: "ok"}); err != nil {
		t.Fatal(err)
	}
}

func TestNULInAStringIsInvalidArgument(t *testing.T) {
	h := start(t)
	_, err := h.client(t, "gateway").Public(context.Background(), &meshtestv1.ProbeRequest{Text: "a\x00b"})
	wantInvalidField(t, err, "text")
}

// ingestStub answers every ingest call once it has read the request.
type ingestStub struct {
	ingestv1.UnimplementedIngestServiceServer
}

func (ingestStub) IngestEvents(context.Context, *ingestv1.IngestEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	return &ingestv1.IngestEventsResponse{}, nil
}

func (ingestStub) StreamEvents(s grpc.BidiStreamingServer[ingestv1.StreamEventsRequest, ingestv1.IngestEventsResponse]) error {
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := s.Send(&ingestv1.IngestEventsResponse{}); err != nil {
			return err
		}
	}
}

func startIngestStub(t *testing.T) (*grpc.ClientConn, *harness) {
	t.Helper()
	h := &harness{iss: meshtest.NewIssuer(t)}
	srv := grpcserver.New(grpcserver.WithMaxRecvMsgSize(8<<20), grpcserver.WithAuditor(&auditLog{}), grpcserver.WithVerifier(h.iss.Verifier()))
	ingestv1.RegisterIngestServiceServer(srv.GRPC(), ingestStub{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, h
}

// deepProperties nests n structs inside an event's properties.
func deepProperties(n int) []byte {
	v := structpb.NewStringValue("leaf")
	for i := 0; i < n; i++ {
		v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"a": v}})
	}
	b, err := proto.Marshal(&ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Properties: v.GetStructValue()}}})
	if err != nil {
		panic(err)
	}
	return b
}

func TestDeeplyNestedRequestIsInvalidArgument(t *testing.T) {
	conn, _ := startIngestStub(t)
	body := deepProperties(4000) // 3 messages a level: past protobuf's recursion limit
	var out []byte
	err := conn.Invoke(context.Background(), ingestv1.IngestService_IngestEvents_FullMethodName, &body, &out, grpc.ForceCodecV2(rawCodec{}))
	wantInvalidField(t, err, "events[0].properties")
}

func TestUndecodableStreamMessageIsInvalidArgument(t *testing.T) {
	conn, h := startIngestStub(t)
	// events[0].name (field 3 of Event, field 1 of the request) with invalid UTF-8.
	event := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte("n\xc3"))
	body := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), event)
	s, err := conn.NewStream(bearer(h.token(t, "admin", "t1", "u1")), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		ingestv1.IngestService_StreamEvents_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&body); err != nil {
		t.Fatal(err)
	}
	var out []byte
	wantInvalidField(t, s.RecvMsg(&out), "events[0].name")
}

// A Timestamp outside years 1-9999 (only a hand-made message can carry one) would reach a
// store as a time it cannot hold: refused at validation, naming the field.
func TestTimestampOutOfRangeIsInvalidArgument(t *testing.T) {
	conn, h := startIngestStub(t)
	_, err := ingestv1.NewIngestServiceClient(conn).IngestEvents(bearer(h.token(t, "admin", "t1", "u1")),
		&ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{SentAt: &timestamppb.Timestamp{Seconds: 1 << 62}}}})
	wantInvalidField(t, err, "events[0].sent_at")
}
