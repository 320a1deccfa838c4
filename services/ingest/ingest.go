// Package ingest is the domain of the ingest service: it validates events, corrects their time
// for client clock skew, applies the per-tenant and per-source rate limits, names each batch
// (the id that makes a resent batch a duplicate the stream drops) and decides what is published
// to the event stream, through the Publisher port it declares (services/ingest/natsjs implements
// it on JetStream). Valid events of a request are accepted even when others are rejected; every
// rejection names the event's index and the reason.
//
// Deliberate exception to the house shape: this domain works on the generated wire messages
// (ingestv1.Event in, ingestv1.AcceptedEvent, Rejection and Warning out) instead of types of
// its own. A request carries up to 1,000 events and ingest's throughput is the product: copying
// every event into a domain struct and back into the wire batch that is published would cost
// throughput on the hottest path for no rule that needs it. The exception stops there: the domain imports neither the gRPC server nor the
// access layer, and no generated package but ingestv1 (and access/v1, which ingestv1's file
// imports for its method options).
package ingest

import (
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
)

// Limits bound what one request may carry.
type Limits struct {
	MaxEventBytes  int
	MaxBatchBytes  int
	MaxBatchEvents int
	MaxProperties  int
	MaxKeyLen      int
	MaxStringLen   int
	// SkewTolerance: a client clock within this of the server's is trusted as it is.
	SkewTolerance time.Duration
	// MaxFuture: a corrected time further than this ahead of reception is clamped to it.
	MaxFuture time.Duration
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{
	MaxEventBytes:  32 << 10,
	MaxBatchBytes:  500 << 10,
	MaxBatchEvents: 1000,
	MaxProperties:  100,
	MaxKeyLen:      128,
	MaxStringLen:   200,
	SkewTolerance:  time.Minute,
	MaxFuture:      time.Minute,
}

// validEventID: 1-128 printable ASCII characters (no space).
func validEventID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// Result is what a request turned into.
type Result struct {
	Accepted []*ingestv1.AcceptedEvent
	Rejected []*ingestv1.Rejection
	Warnings []*ingestv1.Warning
	// Suppressed counts the valid events of suppressed data subjects, dropped (Service.Ingest).
	Suppressed int
	// QuotaWarnings are the tenant's soft quotas the accepted events went past (WithQuotas).
	QuotaWarnings []quota.Exceeded
}

// Prepare validates and enriches the events of one request received at receivedAt for tenant
// from source. A request over the batch limits is refused whole (an error); otherwise each
// event is accepted or rejected on its own.
func (l Limits) Prepare(events []*ingestv1.Event, tenant, source string, receivedAt time.Time, requestBytes int) (Result, error) {
	if len(events) == 0 {
		return Result{}, fmt.Errorf("a batch needs at least one event")
	}
	if len(events) > l.MaxBatchEvents {
		return Result{}, fmt.Errorf("a batch holds at most %d events, this one %d", l.MaxBatchEvents, len(events))
	}
	if requestBytes > l.MaxBatchBytes {
		return Result{}, fmt.Errorf("a batch is at most %d bytes, this one %d", l.MaxBatchBytes, requestBytes)
	}
	var r Result
	r.Accepted = make([]*ingestv1.AcceptedEvent, 0, len(events))
	received := timestamppb.New(receivedAt) // shared: never modified
	seen := make(map[string]bool, len(events))
	for i, e := range events {
		if field, reason := l.validate(e); reason != "" {
			r.Rejected = append(r.Rejected, &ingestv1.Rejection{Index: int32(i), EventId: safeID(e.GetEventId()), Field: fmt.Sprintf("events[%d]%s", i, field), Reason: reason})
			continue
		}
		if seen[e.GetEventId()] {
			r.Rejected = append(r.Rejected, &ingestv1.Rejection{Index: int32(i), EventId: e.GetEventId(), Field: fmt.Sprintf("events[%d].event_id", i), Reason: "repeats an event_id earlier in this batch"})
			continue
		}
		seen[e.GetEventId()] = true
		corrected, warning := l.CorrectTime(e.GetTimestamp(), e.GetSentAt(), receivedAt)
		if warning != "" {
			r.Warnings = append(r.Warnings, &ingestv1.Warning{Index: int32(i), Message: warning})
		}
		correctedPB := received
		if !corrected.Equal(receivedAt) {
			correctedPB = timestamppb.New(corrected)
		}
		r.Accepted = append(r.Accepted, &ingestv1.AcceptedEvent{
			Event: e, TenantId: tenant, Source: source, ReceivedAt: received, CorrectedTime: correctedPB,
		})
	}
	return r, nil
}

// validate returns the field at fault (relative to the event) and the reason, or "" when valid.
func (l Limits) validate(e *ingestv1.Event) (string, string) {
	switch {
	case e == nil:
		return "", "is empty"
	case !validEventID(e.GetEventId()):
		return ".event_id", "must be 1-128 printable ASCII characters"
	case e.GetType() == ingestv1.EventType_EVENT_TYPE_UNSPECIFIED || ingestv1.EventType_name[int32(e.GetType())] == "":
		return ".type", "must be one of track, identify, page, impression, click, conversion"
	case e.GetUserId() == "" && e.GetAnonymousId() == "":
		return ".user_id", "user_id or anonymous_id is required"
	case (e.GetType() == ingestv1.EventType_EVENT_TYPE_TRACK || e.GetType() == ingestv1.EventType_EVENT_TYPE_CONVERSION) && e.GetName() == "":
		return ".name", "is required for track and conversion events"
	}
	for _, f := range [...]struct{ field, value string }{{".name", e.GetName()}, {".user_id", e.GetUserId()},
		{".anonymous_id", e.GetAnonymousId()}, {".campaign_id", e.GetCampaignId()}, {".variant", e.GetVariant()}} {
		if len(f.value) > l.MaxStringLen && utf8.RuneCountInString(f.value) > l.MaxStringLen {
			return f.field, fmt.Sprintf("must be at most %d characters", l.MaxStringLen)
		}
	}
	if v := e.GetValue(); v != nil {
		if len(v.GetCurrency()) != 3 || v.GetCurrency() != upperASCII(v.GetCurrency()) {
			return ".value.currency", "must be a 3-letter ISO 4217 code"
		}
	}
	if ts := e.GetTimestamp(); ts != nil && !ts.IsValid() {
		return ".timestamp", "is not a valid time"
	}
	if ts := e.GetSentAt(); ts != nil && !ts.IsValid() {
		return ".sent_at", "is not a valid time"
	}
	if p := e.GetProperties(); p != nil {
		if len(p.GetFields()) > l.MaxProperties {
			return ".properties", fmt.Sprintf("at most %d keys", l.MaxProperties)
		}
		for k := range p.GetFields() {
			if k == "" || len(k) > l.MaxKeyLen {
				return ".properties", fmt.Sprintf("keys must be 1-%d bytes", l.MaxKeyLen)
			}
		}
	}
	if proto.Size(e) > l.MaxEventBytes {
		return "", fmt.Sprintf("is larger than %d bytes", l.MaxEventBytes)
	}
	return "", ""
}

// CorrectTime applies the skew rule. The client's clock offset is estimated as
// receivedAt − sentAt. That estimate also contains the request's transit time, so it is only
// applied when it exceeds SkewTolerance: a correct clock and a slow network (say 20 s) leave
// the timestamp as sent, while a clock that is hours off is corrected. Limits: offsets within
// the tolerance are not corrected, and a transit longer than the tolerance is mistaken for skew.
// A time still more than MaxFuture after reception is clamped to the reception time.
func (l Limits) CorrectTime(timestamp, sentAt *timestamppb.Timestamp, receivedAt time.Time) (time.Time, string) {
	if timestamp == nil {
		return receivedAt, ""
	}
	t := timestamp.AsTime()
	warning := ""
	if sentAt != nil {
		offset := receivedAt.Sub(sentAt.AsTime())
		if offset > l.SkewTolerance || offset < -l.SkewTolerance {
			t = t.Add(offset)
			warning = fmt.Sprintf("client clock off by %s; timestamp corrected", offset.Round(time.Second))
		}
	}
	if t.After(receivedAt.Add(l.MaxFuture)) {
		return receivedAt, "timestamp in the future; clamped to the time received"
	}
	return t, warning
}

func safeID(id string) string {
	if len(id) > 128 || !utf8.ValidString(id) {
		return ""
	}
	return id
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 'A' || c > 'Z' {
			b[i] = 0
		}
	}
	return string(b)
}
