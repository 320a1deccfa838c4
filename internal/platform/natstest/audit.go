package natstest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
)

// AuditSink is a durable audit sink of service for a server under test that has no auth
// service to deliver to: records are stored in the audit stream of an embedded server of
// their own, never delivered.
func AuditSink(tb testing.TB, service string) *auditnats.Sink {
	tb.Helper()
	nc, err := nats.Connect(Start(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	sink, err := auditnats.New(context.Background(), js, service, nil, slog.New(slog.DiscardHandler), auditnats.DefaultConfig)
	if err != nil {
		tb.Fatal(err)
	}
	return sink
}
