package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

var eventCommands = []*command{
	{
		name:    "tail",
		summary: "print your tenant's event outcomes as ingest decides them, until Ctrl-C",
		details: `The live event debugger, for setting up an SDK: a line per event ingest accepted (as
stored, after the privacy policy), rejected (the field at fault and why) or dropped as
its data subject is suppressed (the event id only), with who sent it; with -o json, one
JSON object per line. A tail receives a bounded number of outcomes per second: a line
"dropped n" says how many it missed. The server ends a stream after a while; cmesh then
reconnects. Needs events.debug (admin, manager): a write key cannot tail.

` + credentialDetails,
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
	for {
		err := a.tail(ctx)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		if err != nil {
			return err
		}
		// The server ends a stream after its maximum duration: open the next one, renewing
		// the access token if it has expired meanwhile.
	}
}

// tail opens one TailEvents stream and prints its outcomes until it ends (no error).
func (a *app) tail(ctx context.Context) error {
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
