package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamMsgs is the number of messages stream holds.
func StreamMsgs(tb testing.TB, js jetstream.JetStream, stream string) uint64 {
	tb.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// ConsumerPending is the number of stream's messages consumer has not yet had delivered or
// not yet acknowledged.
func ConsumerPending(tb testing.TB, js jetstream.JetStream, stream, consumer string) uint64 {
	tb.Helper()
	c, err := js.Consumer(context.Background(), stream, consumer)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.NumPending + uint64(info.NumAckPending)
}
