package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

var eventCommands = []*command{
	{
		name:    "tail",
		summary: "print your tenant's event outcomes as ingest decides them, until Ctrl-C",
		details: `The live event debugger, for setting up an SDK: a line per event ingest accepted (as
stored, after the privacy policy), rejected (the field at fault and why) or dropped as
its data subject is suppressed (the event id only), with who sent it; with
cmesh -o json events tail, one JSON object per line. A tail receives a bounded number of outcomes per second: a line
"dropped n" says how many it missed. The server ends a stream after a while; cmesh then
reconnects, and so it does, with backoff, while the service is unavailable (a restart or
a rollout). A stream starts with the tenant's recent outcomes (by default the last 100 of
the last 10 minutes, on every ingest instance); after a reconnect, those already printed
are not printed again. Needs events.debug (admin, manager): a write key cannot tail.

Scripts can send an API key holding events.debug: CMESH_TOKEN=<secret> cmesh events tail`,
		run: runEventsTail,
	},
}

func runEventsTail(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	if a.output != "json" {
		if _, err := fmt.Fprintf(a.stdout, tailFormat, "TIME", "OUTCOME", "EVENT", "SOURCE", "DETAIL"); err != nil {
			return err
		}
	}
	printed := newRecentKeys(1000)
	wait := tailRetryMin
	for {
		start := time.Now()
		err := a.tail(ctx, printed)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		switch {
		case err == nil:
			// The server ends a stream after its maximum duration: open the next one, renewing
			// the access token if it has expired meanwhile.
			wait = tailRetryMin
			continue
		case status.Code(err) != codes.Unavailable:
			return err
		}
		// Unavailable: an ingest instance restarting or draining (a rollout), or the gateway
		// between connections. Reconnect with backoff until Ctrl-C; the next stream's recent
		// outcomes cover what happened meanwhile (none printed twice).
		if time.Since(start) > tailRetryMax { // it was up a while: a new outage starts the backoff over
			wait = tailRetryMin
		}
		fmt.Fprintf(a.stderr, "cmesh: events tail interrupted (%s); reconnecting in %s\n", status.Convert(err).Message(), wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, tailRetryMax)
	}
}

// Backoff of events tail's reconnections after UNAVAILABLE.
const (
	tailRetryMin = 250 * time.Millisecond
	tailRetryMax = 10 * time.Second
)

// tail opens one TailEvents stream and prints its outcomes until it ends (no error). A stream
// starts with the tenant's recent outcomes: those an earlier stream printed (in printed) are
// not printed again.
func (a *app) tail(ctx context.Context, printed *recentKeys) error {
	ctx, client, err := serviceClient(ctx, a, ingestv1.NewIngestServiceClient)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.TailEvents(ctx, &ingestv1.TailEventsRequest{})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if resp.GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED && !printed.add(outcomeKey(resp)) {
			continue
		}
		if err := a.writeOutcome(resp); err != nil {
			return err
		}
	}
}

// tailFormat lays out a line of events tail.
const tailFormat = "%-20s  %-10s  %-36s  %-24s  %s\n"

// writeOutcome prints one outcome: a line of the table, or one JSON object on a line.
func (a *app) writeOutcome(o *ingestv1.TailEventsResponse) error {
	if a.output == "json" {
		b, err := protojson.Marshal(o)
		if err != nil {
			return fmt.Errorf("encode %s: %w", o.ProtoReflect().Descriptor().Name(), err)
		}
		_, err = a.stdout.Write(append(b, '\n'))
		return err
	}
	outcome := strings.TrimPrefix(o.GetOutcome().String(), "EVENT_OUTCOME_")
	var detail string
	switch o.GetOutcome() {
	case ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED:
		e := o.GetEvent()
		detail = strings.TrimPrefix(e.GetType().String(), "EVENT_TYPE_")
		if e.GetName() != "" {
			detail += " " + e.GetName()
		}
	case ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED:
		detail = o.GetRejection().GetField() + ": " + o.GetRejection().GetReason()
	case ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED:
		detail = fmt.Sprintf("dropped %d", o.GetDropped())
	}
	line := fmt.Sprintf(tailFormat, formatTimestamp(o.GetTime()), outcome, orDash(o.GetEventId()), orDash(o.GetSource()), detail)
	_, err := io.WriteString(a.stdout, strings.TrimRight(line, " \n")+"\n")
	return err
}

// recentKeys remembers the last n outcomes printed, by key.
type recentKeys struct {
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentKeys(n int) *recentKeys {
	return &recentKeys{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add remembers k, forgetting the oldest when full; false when k was remembered already.
func (r *recentKeys) add(k string) bool {
	if _, ok := r.set[k]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = k
	r.set[k] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}

// outcomeKey tells outcomes apart: those of one request share their time and sender and differ
// by event id (and, for rejections, index: a rejected event may have no id).
func outcomeKey(o *ingestv1.TailEventsResponse) string {
	return fmt.Sprintf("%d|%d.%d|%s|%d|%s", o.GetOutcome(), o.GetTime().GetSeconds(), o.GetTime().GetNanos(), o.GetSource(), o.GetRejection().GetIndex(), o.GetEventId())
}
