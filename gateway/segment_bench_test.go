package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// The cost of one 100-event batch at the edge, the Segment route against the REST route that
// bench-ingest compares it with (the same events in both shapes). Ingest behind the edge only
// decodes the request and answers, so the figures are the gateway's work plus the gRPC hop.
// go test -run x -bench 'Segment|REST' -benchmem ./gateway

const benchBatch = 100

// benchSegmentBody is bench-ingest's Segment batch: 100 track events with a messageId, a user,
// a timestamp and campaign_id and variant as properties.
func benchSegmentBody() []byte {
	now := time.Date(2026, 11, 29, 7, 0, 0, 123456789, time.UTC).Format(time.RFC3339Nano)
	items := make([]map[string]any, benchBatch)
	for j := range items {
		items[j] = map[string]any{"type": "track", "messageId": fmt.Sprintf("s-0-0-%d", j),
			"userId": fmt.Sprintf("user-%d", j), "event": "impression", "timestamp": now,
			"properties": map[string]any{"campaign_id": "bench", "variant": "a"}}
	}
	body, _ := json.Marshal(map[string]any{"batch": items, "sentAt": now})
	return body
}

// benchRESTBody is bench-ingest's REST batch: the same events as IngestEventsRequest JSON;
// withProperties adds the properties the Segment events carry (campaign_id and variant are
// kept as properties there too).
func benchRESTBody(withProperties bool) []byte {
	req := &ingestv1.IngestEventsRequest{Events: make([]*ingestv1.Event, benchBatch)}
	now := timestamppb.New(time.Date(2026, 11, 29, 7, 0, 0, 123456789, time.UTC))
	for j := range req.Events {
		req.Events[j] = &ingestv1.Event{
			EventId: fmt.Sprintf("r-0-0-%d", j), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION,
			UserId: fmt.Sprintf("user-%d", j), CampaignId: "bench", Variant: "a", Timestamp: now,
		}
		if withProperties {
			req.Events[j].Properties = &structpb.Struct{Fields: map[string]*structpb.Value{
				"campaign_id": structpb.NewStringValue("bench"), "variant": structpb.NewStringValue("a")}}
		}
	}
	body, _ := protojson.Marshal(req)
	return body
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// acceptAll is an ingest that takes every event.
type acceptAll struct {
	ingestv1.UnimplementedIngestServiceServer
}

func (acceptAll) IngestEvents(_ context.Context, r *ingestv1.IngestEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	return &ingestv1.IngestEventsResponse{Accepted: int32(len(r.GetEvents()))}, nil
}

// benchEdge is a gateway in front of acceptAll over an in-memory connection.
func benchEdge(b *testing.B) http.Handler {
	b.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	ingestv1.RegisterIngestServiceServer(srv, acceptAll{})
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bench", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	gw, err := New(context.Background(), Config{RateLimit: 1 << 30, Logger: slog.New(slog.DiscardHandler)},
		[]Backend{{Package: ingestPackage, Conn: conn, RegisterREST: ingestv1.RegisterIngestServiceHandler}})
	if err != nil {
		b.Fatal(err)
	}
	return gw
}

func benchPost(b *testing.B, h http.Handler, path string, body []byte, header map[string]string) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "events/s")
}

const benchKey = "cmk_0123456789abcdef0123456789abcdef_bench"

// BenchmarkSegmentBatchEdge is POST /v1/batch through the whole edge, plain and gzipped.
func BenchmarkSegmentBatchEdge(b *testing.B) {
	h := benchEdge(b)
	plain := benchSegmentBody()
	header := map[string]string{"Content-Type": "application/json", "Authorization": "Basic " + basicAuth(benchKey)}
	b.Run("plain", func(b *testing.B) { benchPost(b, h, "/v1/batch", plain, header) })
	zipped := gzipBytes(plain)
	zheader := map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip", "Authorization": header["Authorization"]}
	b.Run("gzip", func(b *testing.B) { benchPost(b, h, "/v1/batch", zipped, zheader) })
}

// BenchmarkRESTBatchEdge is POST /v1/events:batch (grpc-gateway, protojson) through the whole
// edge: the budget the Segment route is held to.
// "properties" sends the properties the Segment events carry, to tell the cost of the
// Segment shape (a Struct an event, marshalled at the edge and unmarshalled by ingest) from
// the cost of the Segment decoding.
func BenchmarkRESTBatchEdge(b *testing.B) {
	h := benchEdge(b)
	header := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer x"}
	b.Run("bench", func(b *testing.B) { benchPost(b, h, "/v1/events:batch", benchRESTBody(false), header) })
	b.Run("properties", func(b *testing.B) { benchPost(b, h, "/v1/events:batch", benchRESTBody(true), header) })
}

// BenchmarkSegmentDecode is the Segment route's own work on one batch: read (and gunzip) the
// body, decode it, and map its items to events, without the HTTP or gRPC around it.
func BenchmarkSegmentDecode(b *testing.B) {
	plain := benchSegmentBody()
	for _, c := range []struct {
		name string
		body []byte
	}{{"plain", plain}, {"gzip", gzipBytes(plain)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if n := benchDecodeSegment(b, c.body); n != benchBatch {
					b.Fatalf("%d events", n)
				}
			}
		})
	}
}

// BenchmarkRESTDecode is what grpc-gateway does with the REST body before the call: the input
// check and protojson into the request.
func BenchmarkRESTDecode(b *testing.B) {
	body := benchRESTBody(false)
	b.ReportAllocs()
	for b.Loop() {
		if reason := checkJSON(body, false); reason != "" {
			b.Fatal(reason)
		}
		var req ingestv1.IngestEventsRequest
		if err := protojson.Unmarshal(body, &req); err != nil || len(req.Events) != benchBatch {
			b.Fatal(err)
		}
	}
}

func basicAuth(user string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, "")
	return req.Header.Get("Authorization")[len("Basic "):]
}

// benchDecodeSegment reads, decodes and maps one batch body and returns the events mapped.
func benchDecodeSegment(b *testing.B, raw []byte) int {
	scratch := getSegmentScratch()
	defer putSegmentScratch(scratch)
	body, err := scratch.readSegmentBody(bytes.NewReader(raw), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	d := &scratch.doc
	root, ok := d.parse(body)
	if !ok {
		b.Fatal("not parsed")
	}
	list := d.get(root, "batch")
	n := 0
	for _, item := range d.vals[list.lo:list.hi] {
		if m := mapSegmentEvent(d, item, d.stringValue(d.get(item, "type")), root); m.event != nil {
			n++
		}
	}
	return n
}
