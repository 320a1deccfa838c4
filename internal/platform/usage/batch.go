package usage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublishAll stores units on the stream and returns once the server acknowledged every one of
// them, or the first error. The publishes are pipelined (one round trip for all, not one
// each); a unit whose id the stream holds already within its duplicate window is acknowledged
// without being stored again, so calling PublishAll again with the same units after an error
// is safe.
func PublishAll(ctx context.Context, js jetstream.JetStream, units []Unit) error {
	futures := make([]jetstream.PubAckFuture, 0, len(units))
	for _, u := range units {
		if err := u.Validate(); err != nil {
			return err
		}
		body, err := json.Marshal(u)
		if err != nil {
			return fmt.Errorf("encode usage unit %s: %w", u.ID, err)
		}
		msg := &nats.Msg{Subject: Subject(u.Tenant), Data: body, Header: nats.Header{}}
		f, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(u.ID), jetstream.WithExpectStream(StreamName))
		if err != nil {
			return fmt.Errorf("publish usage unit %s: %w", u.ID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish usage unit %s: %w", units[i].ID, err)
		case <-ctx.Done():
			return fmt.Errorf("publish usage unit %s: %w", units[i].ID, errors.Join(ctx.Err(), errors.New("not acknowledged")))
		}
	}
	return nil
}
