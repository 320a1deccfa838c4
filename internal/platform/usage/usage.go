// Package usage is the JetStream stream USAGE, where services record billable units the moment
// they happen (one message a unit of work, e.g. an analytics query run), and billing consumes
// them into its usage table. A unit is recorded exactly once by the pair of them: the publisher
// waits for the stream's acknowledgement before it answers its own caller (so no answered work
// is missed), a retried publish carries the same message id (Nats-Msg-Id = Unit.ID) and the
// stream drops it within the duplicate window, and billing keys its rows on the same id.
//
// The package depends on nats.go alone: services/billing is never imported, so the meter names
// a publisher may use are repeated here as strings (they equal billing.Meter's).
package usage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream. Subjects are usage.<tenant id> (Subject).
const (
	StreamName    = "USAGE"
	SubjectPrefix = "usage."
)

// The stream's limits. Billing consumes continuously, so a week of retention covers any outage
// of it that matters; the duplicate window covers a publisher's retries of one unit.
const (
	MaxAge     = 7 * 24 * time.Hour
	Duplicates = 10 * time.Minute
)

// The meters whose source records units as they happen (billing.Meter's names).
const (
	// MeterAnalyticsQueries is the meter of analytics queries run (billing.AnalyticsQueries).
	MeterAnalyticsQueries = "analytics_queries"
	// MeterEventsAccepted is the meter of events ingest accepted (billing.EventsAccepted),
	// recorded by the analytics writer per stream batch (writer.WithAcceptedUsage).
	MeterEventsAccepted = "events_accepted"
)

// meters are the meters a unit on the stream may name.
var meters = map[string]bool{MeterAnalyticsQueries: true, MeterEventsAccepted: true}

// Bounds on a unit's fields.
const (
	maxIDLen     = 64
	maxTenantLen = 200
	maxUnits     = 1_000_000
)

// StreamConfig is the stream's configuration: file storage, so acknowledged units survive a
// restart of the server.
func StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld, MaxAge: MaxAge, Duplicates: Duplicates,
	}
}

// EnsureStream creates the stream when missing and returns it. Publishers and billing may all
// call it, whoever starts first: no update rights are needed when it exists, and a lost race
// to create it opens the winner's.
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, StreamName)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("open stream %s: %w", StreamName, err)
	}
	s, err = js.CreateStream(ctx, StreamConfig())
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.Stream(ctx, StreamName)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", StreamName, err)
	}
	return s, nil
}

// Unit is units of one meter a tenant used at a time. Its JSON is the message body:
// {"id","tenant","meter","units","time"} (time RFC 3339 with nanoseconds).
type Unit struct {
	// ID identifies the unit: the message id, and billing's key for it.
	ID     string    `json:"id"`
	Tenant string    `json:"tenant"`
	Meter  string    `json:"meter"`
	Units  int64     `json:"units"`
	Time   time.Time `json:"time"`
}

// NewUnit returns one unit of meter for tenant at now, with a fresh (random UUID) id.
func NewUnit(tenant, meter string, now time.Time) Unit {
	return Unit{ID: uuid.NewString(), Tenant: tenant, Meter: meter, Units: 1, Time: now.UTC()}
}

// Subject is the subject of tenant's units.
func Subject(tenant string) string { return SubjectPrefix + tenant }

// Validate checks u's fields: an id, a tenant that is one subject token, a known meter, a
// positive bounded count and a time.
func (u Unit) Validate() error {
	switch {
	case u.ID == "" || len(u.ID) > maxIDLen:
		return fmt.Errorf("usage unit: id must be 1 to %d bytes", maxIDLen)
	case !validToken(u.Tenant):
		return fmt.Errorf("usage unit %s: tenant %q is not a subject token", u.ID, u.Tenant)
	case !meters[u.Meter]:
		return fmt.Errorf("usage unit %s: unknown meter %q", u.ID, u.Meter)
	case u.Units < 1 || u.Units > maxUnits:
		return fmt.Errorf("usage unit %s: units must be 1 to %d", u.ID, maxUnits)
	case u.Time.IsZero():
		return fmt.Errorf("usage unit %s: no time", u.ID)
	}
	return nil
}

// validToken reports whether s can be one token of a subject: no wildcard, separator or space.
func validToken(s string) bool {
	return s != "" && len(s) <= maxTenantLen && !strings.ContainsAny(s, ".*> \t\r\n")
}

// Publish stores u on the stream and returns once the server acknowledged it. The message id
// is u.ID, so publishing the same unit again within the duplicate window stores nothing more.
func Publish(ctx context.Context, js jetstream.JetStream, u Unit) error {
	if err := u.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode usage unit %s: %w", u.ID, err)
	}
	msg := &nats.Msg{Subject: Subject(u.Tenant), Data: body, Header: nats.Header{}}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(u.ID), jetstream.WithExpectStream(StreamName)); err != nil {
		return fmt.Errorf("publish usage unit %s: %w", u.ID, err)
	}
	return nil
}

// Decode returns the unit a message of the stream carries. It refuses a body that does not
// decode or validate, and one whose tenant is not the subject's: the subject is what the
// publishers' permissions are checked against, so a body may not claim another tenant.
func Decode(msg jetstream.Msg) (Unit, error) {
	return decode(msg.Subject(), msg.Data())
}

func decode(subject string, data []byte) (Unit, error) {
	tenant, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok || !validToken(tenant) {
		return Unit{}, fmt.Errorf("usage message on %q: not a usage subject", subject)
	}
	var u Unit
	if err := json.Unmarshal(data, &u); err != nil {
		return Unit{}, fmt.Errorf("usage message on %s: decode: %w", subject, err)
	}
	if err := u.Validate(); err != nil {
		return Unit{}, err
	}
	if u.Tenant != tenant {
		return Unit{}, fmt.Errorf("usage unit %s: tenant %q does not match subject %s", u.ID, u.Tenant, subject)
	}
	return u, nil
}

// PublishTimeout bounds how long Recorder waits for the stream's acknowledgement: while NATS
// is away the client buffers publishes, and the caller waits for its answer meanwhile.
const PublishTimeout = 5 * time.Second

// Recorder publishes one unit of its meter per call (e.g. analytics.QueryRecorder).
type Recorder struct {
	js    jetstream.JetStream
	meter string
	now   func() time.Time
}

// NewRecorder returns a recorder of meter's units on the stream of js.
func NewRecorder(js jetstream.JetStream, meter string) *Recorder {
	return &Recorder{js: js, meter: meter, now: time.Now}
}

// Record stores one unit of the recorder's meter for tenant, with a fresh id, and returns once
// the stream acknowledged it (at most PublishTimeout).
func (r *Recorder) Record(ctx context.Context, tenant string) error {
	ctx, cancel := context.WithTimeout(ctx, PublishTimeout)
	defer cancel()
	return Publish(ctx, r.js, NewUnit(tenant, r.meter, r.now()))
}

// RecordQuery is Record: a Recorder of MeterAnalyticsQueries is the analytics service's
// QueryRecorder.
func (r *Recorder) RecordQuery(ctx context.Context, tenant string) error {
	return r.Record(ctx, tenant)
}

// FirstDay is the first UTC day a usage count may be asked for: nothing was stored before it.
var FirstDay = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// ParseDay reads the UTC day (YYYY-MM-DD) of a usage count request: from FirstDay to the day
// after now's (a caller's clock a little ahead). It returns the day's start; the error text is
// for the caller (a field violation on the day).
func ParseDay(day string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil || len(day) != len(time.DateOnly) {
		return time.Time{}, errors.New("must be a date, YYYY-MM-DD")
	}
	if last := now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour); t.Before(FirstDay) || t.After(last) {
		return time.Time{}, fmt.Errorf("must be from %s to %s", FirstDay.Format(time.DateOnly), last.Format(time.DateOnly))
	}
	return t, nil
}
