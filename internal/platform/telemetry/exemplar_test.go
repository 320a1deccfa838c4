package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

func spanContext(t *testing.T, sampled bool) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	flags := trace.TraceFlags(0)
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags}))
}

// A latency observed under a sampled span carries its trace id as the exemplar, and the admin
// listener shows it to a scraper that asks for OpenMetrics (not in the plain text format).
func TestObserveWithTraceLinksTheSampledTrace(t *testing.T) {
	if got := telemetry.TraceExemplar(context.Background()); got != nil {
		t.Errorf("no span: exemplar %v, want none", got)
	}
	if got := telemetry.TraceExemplar(spanContext(t, false)); got != nil {
		t.Errorf("unsampled span: exemplar %v, want none (its trace is not exported)", got)
	}

	reg := telemetry.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "test_latency_seconds", Help: "Test latency.", Buckets: []float64{0.1, 1}})
	reg.MustRegister(h)
	telemetry.ObserveWithTrace(spanContext(t, true), h, 0.05)
	telemetry.ObserveWithTrace(context.Background(), h, 0.5)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- telemetry.ServeAdminOn(ctx, lis, reg, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })
	scrape := func(accept string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+lis.Addr().String()+"/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	om := scrape("application/openmetrics-text; version=1.0.0")
	want := `test_latency_seconds_bucket{le="0.1"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.05`
	if !strings.Contains(om, want) {
		t.Errorf("OpenMetrics scrape lacks %q:\n%s", want, om)
	}
	if strings.Count(om, "trace_id=") != 1 {
		t.Errorf("OpenMetrics scrape has exemplars beyond the sampled observation:\n%s", om)
	}
	if text := scrape(""); strings.Contains(text, "trace_id") || !strings.Contains(text, "test_latency_seconds_count 2") {
		t.Errorf("plain scrape: want the text format without exemplars:\n%s", text)
	}
}
