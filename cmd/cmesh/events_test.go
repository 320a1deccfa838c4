package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// tailIngest is an IngestService that sends two outcomes on the first tail and ends it, as
// the server does after its maximum duration; the next starts with those two again (the
// recent outcomes), sends two more and waits.
type tailIngest struct {
	ingestv1.UnimplementedIngestServiceServer
	mu      sync.Mutex
	streams int
	// unavailable ends the first stream as a draining or restarting ingest does, with
	// UNAVAILABLE, and refuses the second the same way, instead of ending it cleanly.
	unavailable bool
}

func (s *tailIngest) TailEvents(_ *ingestv1.TailEventsRequest, stream grpc.ServerStreamingServer[ingestv1.TailEventsResponse]) error {
	s.mu.Lock()
	s.streams++
	n := s.streams
	s.mu.Unlock()
	at := timestamppb.New(testNow)
	if n == 1 {
		stream.Send(&ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED, Time: at, Source: "key-1", EventId: "e1",
			Event: &ingestv1.Event{EventId: "e1", Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "Signed Up"}})
		stream.Send(&ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED, Time: at, Source: "key-1", EventId: "e2",
			Rejection: &ingestv1.Rejection{Index: 1, EventId: "e2", Field: "events[1].user_id", Reason: "user_id or anonymous_id is required"}})
		if s.unavailable {
			return status.Error(codes.Unavailable, "server draining")
		}
		return nil
	}
	if n == 2 && s.unavailable {
		return status.Error(codes.Unavailable, "no ingest instance ready")
	}
	// The next stream starts with the recent outcomes: the first stream's, printed already.
	stream.Send(&ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED, Time: at, Source: "key-1", EventId: "e1",
		Event: &ingestv1.Event{EventId: "e1", Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "Signed Up"}})
	stream.Send(&ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED, Time: at, Source: "key-1", EventId: "e2",
		Rejection: &ingestv1.Rejection{Index: 1, EventId: "e2", Field: "events[1].user_id", Reason: "user_id or anonymous_id is required"}})
	stream.Send(&ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_SUPPRESSED, Time: at, Source: "user-1", EventId: "e3"})
	stream.Send(&ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED, Time: at, Dropped: 42})
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestEventsTailInterrupt runs events tail until SIGINT, as Ctrl-C sends it, in both output
// formats; it reconnects when the server ends a stream. Not parallel: no other test may be
// listening for the signal meanwhile.
func TestEventsTailInterrupt(t *testing.T) {
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	table := "" +
		"TIME                  OUTCOME     EVENT                                 SOURCE                    DETAIL\n" +
		"2026-11-22T12:00:00Z  ACCEPTED    e1                                    key-1                     TRACK Signed Up\n" +
		"2026-11-22T12:00:00Z  REJECTED    e2                                    key-1                     events[1].user_id: user_id or anonymous_id is required\n" +
		"2026-11-22T12:00:00Z  SUPPRESSED  e3                                    user-1\n" +
		"2026-11-22T12:00:00Z  DROPPED     -                                     -                         dropped 42\n"
	tests := []struct {
		args        []string
		unavailable bool
		lines       int
		want        string
	}{
		// A rollout: the stream ends UNAVAILABLE, the next attempt too; the tail reconnects with
		// backoff, says so on stderr, and prints nothing twice.
		{[]string{"events", "tail"}, true, 5, table},
		{[]string{"events", "tail"}, false, 5, "" +
			"TIME                  OUTCOME     EVENT                                 SOURCE                    DETAIL\n" +
			"2026-11-22T12:00:00Z  ACCEPTED    e1                                    key-1                     TRACK Signed Up\n" +
			"2026-11-22T12:00:00Z  REJECTED    e2                                    key-1                     events[1].user_id: user_id or anonymous_id is required\n" +
			"2026-11-22T12:00:00Z  SUPPRESSED  e3                                    user-1\n" +
			"2026-11-22T12:00:00Z  DROPPED     -                                     -                         dropped 42\n"},
		{[]string{"-o", "json", "events", "tail"}, false, 4, "" +
			`{"outcome":"EVENT_OUTCOME_ACCEPTED","time":"2026-11-22T12:00:00Z","source":"key-1","eventId":"e1","event":{"eventId":"e1","type":"EVENT_TYPE_TRACK","name":"Signed Up"}}` + "\n" +
			`{"outcome":"EVENT_OUTCOME_REJECTED","time":"2026-11-22T12:00:00Z","source":"key-1","eventId":"e2","rejection":{"index":1,"eventId":"e2","field":"events[1].user_id","reason":"user_id or anonymous_id is required"}}` + "\n" +
			`{"outcome":"EVENT_OUTCOME_SUPPRESSED","time":"2026-11-22T12:00:00Z","source":"user-1","eventId":"e3"}` + "\n" +
			`{"outcome":"EVENT_OUTCOME_DROPPED","time":"2026-11-22T12:00:00Z","dropped":"42"}` + "\n"},
	}
	for _, tt := range tests {
		lis := bufconn.Listen(1 << 20)
		s := grpc.NewServer()
		ingestv1.RegisterIngestServiceServer(s, &tailIngest{unavailable: tt.unavailable})
		go s.Serve(lis)
		t.Cleanup(s.Stop)
		c := newTestCLI(t, loggedIn(t, fresh), nil)
		c.dial = func(*app) (authv1.AuthServiceClient, io.Closer, error) {
			conn, err := grpc.NewClient("passthrough:///gateway",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, nil, err
			}
			return authv1.NewAuthServiceClient(conn), conn, nil
		}
		out := &lineWriter{lines: make(chan string, 100)}
		c.app.stdout = out
		done := make(chan int)
		go func() { done <- c.run(context.Background(), tt.args) }()
		for range tt.lines {
			select {
			case <-out.lines:
			case code := <-done:
				t.Fatalf("%v: exit code = %d before the interrupt; stderr:\n%s", tt.args, code, c.stderr)
			case <-time.After(10 * time.Second):
				t.Fatalf("%v: no outcome; stdout:\n%s", tt.args, out)
			}
		}
		if err := self.Signal(os.Interrupt); err != nil {
			t.Skipf("cannot send SIGINT here: %v", err)
		}
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("%v: exit code = %d, want 0; stderr:\n%s", tt.args, code, c.stderr)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: events tail did not stop on SIGINT", tt.args)
		}
		// protojson varies its spacing on purpose: JSON lines are compared without spaces.
		norm := func(s string) string {
			if tt.args[0] == "-o" {
				return strings.ReplaceAll(s, " ", "")
			}
			return s
		}
		if norm(out.String()) != norm(tt.want) {
			t.Errorf("%v: stdout =\n%s\nwant\n%s", tt.args, out, tt.want)
		}
		if stderr := fmt.Sprint(c.stderr); tt.unavailable && (!strings.Contains(stderr, "interrupted (server draining); reconnecting in 250ms") ||
			!strings.Contains(stderr, "interrupted (no ingest instance ready); reconnecting in 500ms")) {
			t.Errorf("%v: stderr does not tell of the reconnections with backoff:\n%s", tt.args, stderr)
		}
	}
}
