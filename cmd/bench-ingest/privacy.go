package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sort"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// plainTenant sends the same events as tenant in the privacy comparison, without a
// suppression list or a policy.
const plainTenant = "bench-plain"

// benchPolicy is the privacy mode's PII rules: hash 2 properties, drop 1, truncate the IP,
// drop the user agent.
var benchPolicy = privacy.Policy{Version: 1, PropertyRules: map[string]privacy.Action{
	"email": privacy.ActionHash, "phone": privacy.ActionHash, "address": privacy.ActionDrop,
}, IP: privacy.IPTruncate, UserAgent: privacy.UserAgentDrop}

// piiRequest is request with what the policy works on: five properties (three of them PII), an
// IP and a user agent.
func piiRequest(run string, caller, call int) *ingestv1.IngestEventsRequest {
	req := request(run, caller, call)
	for j, e := range req.Events {
		e.Properties, _ = structpb.NewStruct(map[string]any{
			"email": fmt.Sprintf("user-%d@example.com", j), "phone": fmt.Sprintf("+1555%07d", j), "address": fmt.Sprintf("%d Main Street", j),
			"plan": "pro", "page": "/checkout",
		})
		e.Context = &ingestv1.EventContext{Ip: fmt.Sprintf("203.0.113.%d", j), UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Bench/1.0", Locale: "en-US"}
	}
	return req
}

// privacyRun measures ingest with privacy on against the same load without it: b.suppressions
// suppressed subjects (none of them in the load, so both sides publish every event) and the
// PII rules for tenant, nothing for plainTenant; the two run in turns of an eighth of the
// duration each, eight times, so a change in the shared machine's load falls on both. It also measures how long a
// suppression put into the bucket takes to apply to the next request.
func (b *bench) privacyRun(ctx context.Context) error {
	r, err := setUp(ctx, false)
	if r != nil {
		defer r.tearDown()
	}
	if err != nil {
		return err
	}
	p, err := startPipeline(ctx, r)
	if err != nil {
		return err
	}
	defer p.stop()
	kv, err := privacy.OpenBucket(ctx, r.js)
	if err != nil {
		return err
	}

	fmt.Printf("\nPrivacy (%d callers, %d-event batches, %d suppressed subjects)\n", b.callers, batchSize, b.suppressions)
	progress("loading %d suppressions for tenant %s into the bucket", b.suppressions, tenant)
	start := time.Now()
	const window = 2000
	for i := 0; i < b.suppressions; i++ {
		key := "$KV." + privacy.Bucket + "." + privacy.SuppressionKey(tenant, p.hasher.SubjectHash(tenant, fmt.Sprintf("erased-%d", i)))
		if _, err := r.js.PublishAsync(key, []byte("dsr_bench")); err != nil {
			return fmt.Errorf("load suppressions: %w", err)
		}
		if (i+1)%window == 0 {
			<-r.js.PublishAsyncComplete()
		}
	}
	<-r.js.PublishAsyncComplete()
	if err := privacy.PutPolicy(ctx, kv, tenant, benchPolicy); err != nil {
		return err
	}
	// The bucket is ordered: once a suppression put last applies, ingest has every one before it.
	if _, err := b.suppressionApplies(ctx, p, kv, "probe-loaded", 2*time.Minute); err != nil {
		return err
	}
	b.add("suppressions loaded into the bucket and applied by ingest", float64(b.suppressions), "subjects",
		fmt.Sprintf("(in %.1f s)", time.Since(start).Seconds()))

	var applied []time.Duration
	for i := range 20 {
		d, err := b.suppressionApplies(ctx, p, kv, fmt.Sprintf("probe-%d", i), 10*time.Second)
		if err != nil {
			return err
		}
		applied = append(applied, d)
	}
	sort.Slice(applied, func(i, j int) bool { return applied[i] < applied[j] })
	b.add("suppression put → applied to the next request: p50", float64(applied[len(applied)/2].Microseconds()), "µs", "(20 puts)")
	b.add("suppression put → applied to the next request: max", float64(applied[len(applied)-1].Microseconds()), "µs", "")

	// Turns of an eighth of the duration each side, the order swapped every round: a change
	// in the shared machine's load falls on both sides alike.
	type side struct {
		ctx    context.Context
		events int64
		time   time.Duration
		last   int64 // events of the latest turn
	}
	plain, priv := &side{ctx: p.plainCtx}, &side{ctx: p.authCtx}
	const rounds = 8
	turn := b.duration / rounds
	var roundRatios []float64
	for round := range rounds {
		order := []*side{plain, priv}
		if round%2 == 1 {
			order = []*side{priv, plain}
		}
		for _, s := range order {
			calls, _, err := load(ctx, b.callers, turn, func(_ context.Context, caller, i int) error {
				resp, err := p.client.IngestEvents(s.ctx, piiRequest(fmt.Sprintf("p%d", round), caller, i))
				if err == nil && resp.GetAccepted() != batchSize {
					return fmt.Errorf("%d of %d events accepted (%d suppressed)", resp.GetAccepted(), batchSize, resp.GetSuppressed())
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("privacy comparison: %w", err)
			}
			s.events += calls * batchSize
			s.time += turn
			s.last = calls * batchSize
		}
		if plain.last > 0 {
			roundRatios = append(roundRatios, float64(priv.last)/float64(plain.last))
		}
	}
	plainEvents, privEvents, plainTime, privTime := plain.events, priv.events, plain.time, priv.time
	without := float64(plainEvents) / plainTime.Seconds()
	with := float64(privEvents) / privTime.Seconds()
	b.add("(d) ingest direct, no suppressions or policy: events durably acked", without, "ev/s", "")
	b.add(fmt.Sprintf("(d) ingest direct, %d suppressions + PII rules: events durably acked", b.suppressions), with, "ev/s", "")
	b.add("privacy on / off", 100*with/without, "%", "(target ≥ 90 %)")
	// A burst of other work on a shared machine lands in one turn; the median of the rounds'
	// ratios (each of two adjacent turns) leaves it out.
	sort.Float64s(roundRatios)
	if len(roundRatios) > 0 {
		b.add("privacy on / off, median of the rounds", 100*roundRatios[len(roundRatios)/2], "%", fmt.Sprintf("(%d rounds of %s a side)", len(roundRatios), turn))
	}
	return nil
}

// suppressionApplies puts a suppression of subject into the bucket and sends one-event
// requests of the subject until ingest answers suppressed; it returns the time from the put.
func (b *bench) suppressionApplies(ctx context.Context, p *pipeline, kv jetstream.KeyValue, subject string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := privacy.PutSuppression(ctx, kv, tenant, p.hasher.SubjectHash(tenant, subject), "dsr_bench"); err != nil {
		return 0, err
	}
	for i := 0; time.Since(start) < limit; i++ {
		resp, err := p.client.IngestEvents(p.authCtx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{
			EventId: fmt.Sprintf("%s-%d", subject, i), Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: subject, Timestamp: timestamppb.Now()}}})
		if err != nil {
			return 0, err
		}
		if resp.GetSuppressed() == 1 {
			return time.Since(start), nil
		}
	}
	return 0, fmt.Errorf("a suppression did not apply within %s", limit)
}

// plainContext returns an outgoing context with a token of plainTenant signed by priv.
func plainContext(ctx context.Context, priv ed25519.PrivateKey) (context.Context, error) {
	now := time.Now()
	tok, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
		Subject: "bench", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}, TenantID: plainTenant, Role: "admin"}, "k", priv)
	if err != nil {
		return nil, err
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), nil
}

// newHasher returns a privacy.Hasher of a random key, as the bench's ingest's.
func newHasher() (*privacy.Hasher, error) {
	key := make([]byte, privacy.MinKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return privacy.NewHasher(key)
}
