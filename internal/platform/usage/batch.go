package usage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxUnitsPerMessage bounds the units one message carries (PublishAll's chunks; DecodeAll
// refuses more): about 150 bytes a unit, well under NATS's 1 MiB payload limit.
const MaxUnitsPerMessage = 1000

// PublishAll stores units on the stream, those of one tenant together as JSON arrays of at most
// MaxUnitsPerMessage units, and returns once the server acknowledged every message, or the
// first error. A message per unit would cost a stored (and, with fsync always, synced) message
// per unit; the analytics writer records a unit per batch of events, hundreds a second.
//
// A message's id is a hash of its units' ids, so publishing the same units again (a retry, a
// redelivered set of batches) within the duplicate window stores nothing more; units grouped
// differently the second time are stored again, and billing, which keys its rows on the unit
// id, counts each once all the same. Calling PublishAll again after an error is safe.
func PublishAll(ctx context.Context, js jetstream.JetStream, units []Unit) error {
	byTenant := map[string][]Unit{}
	var tenants []string
	for _, u := range units {
		if err := u.Validate(); err != nil {
			return err
		}
		if _, ok := byTenant[u.Tenant]; !ok {
			tenants = append(tenants, u.Tenant)
		}
		byTenant[u.Tenant] = append(byTenant[u.Tenant], u)
	}
	var futures []jetstream.PubAckFuture
	for _, tenant := range tenants {
		for chunk := range slices.Chunk(byTenant[tenant], MaxUnitsPerMessage) {
			body, err := json.Marshal(chunk)
			if err != nil {
				return fmt.Errorf("encode usage units of %s: %w", tenant, err)
			}
			msg := &nats.Msg{Subject: Subject(tenant), Data: body, Header: nats.Header{}}
			f, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(messageID(chunk)), jetstream.WithExpectStream(StreamName))
			if err != nil {
				return fmt.Errorf("publish usage units of %s: %w", tenant, err)
			}
			futures = append(futures, f)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish usage units: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("publish usage units: %w", errors.Join(ctx.Err(), errors.New("not acknowledged")))
		}
	}
	return nil
}

// messageID is the message id of units: "units-" and a hash of their sorted ids.
func messageID(units []Unit) string {
	ids := make([]string, len(units))
	for i, u := range units {
		ids[i] = u.ID
	}
	slices.Sort(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return "units-" + hex.EncodeToString(sum[:16])
}

// DecodeAll returns the units a message of the stream carries: one unit (a JSON object, as
// Publish writes) or several (a JSON array of at most MaxUnitsPerMessage, as PublishAll writes).
// It refuses the message whole when a unit does not validate or names another tenant than the
// subject's.
func DecodeAll(msg jetstream.Msg) ([]Unit, error) {
	data := msg.Data()
	if trimmed := strings.TrimLeft(string(data), " \t\r\n"); !strings.HasPrefix(trimmed, "[") {
		u, err := decode(msg.Subject(), data)
		if err != nil {
			return nil, err
		}
		return []Unit{u}, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("usage message on %s: decode: %w", msg.Subject(), err)
	}
	if len(raw) == 0 || len(raw) > MaxUnitsPerMessage {
		return nil, fmt.Errorf("usage message on %s: %d units, want 1 to %d", msg.Subject(), len(raw), MaxUnitsPerMessage)
	}
	units := make([]Unit, 0, len(raw))
	for _, r := range raw {
		u, err := decode(msg.Subject(), r)
		if err != nil {
			return nil, err
		}
		units = append(units, u)
	}
	return units, nil
}
