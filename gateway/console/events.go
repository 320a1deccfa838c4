package console

import (
	"errors"
	"io"
	"net/http"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// liveTimeFormat is RFC 3339 with milliseconds: what every browser's Date parses.
const liveTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// maxShownProperties bounds the properties of one live event sent to the page (as JSON text):
// the debugger shows what an SDK sent, not whole payloads.
const maxShownProperties = 1000

func (c *Console) eventRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"events", c.signedIn(c.eventsPage))
	m.HandleFunc("GET "+Prefix+"events/live", c.signedIn(c.eventsLive))
}

// eventsData is the live events screen: the table fills from the live stream.
type eventsData struct {
	SDK sdkSnippets
}

// sdkSnippets is what the SDK set-up snippets (templates/_sdk.html) show: the gateway's host
// as the browser reached it, and whether they start unfolded.
type sdkSnippets struct {
	Host string
	Open bool
}

func (c *Console) eventsPage(rq *request) {
	// The page calls no RPC: the stream it opens does (TailEvents, events.debug).
	if !rq.need("events.debug") {
		return
	}
	rq.render("events", "Live events", eventsData{SDK: sdkSnippets{Host: rq.r.Host, Open: true}})
}

// liveOutcome is one outcome as the page's script gets it (as JSON; it puts every field into
// the page as text).
type liveOutcome struct {
	Outcome    string `json:"outcome"` // accepted, rejected, suppressed or dropped
	Time       string `json:"time,omitempty"`
	Source     string `json:"source,omitempty"`
	EventID    string `json:"eventId,omitempty"`
	Type       string `json:"type,omitempty"`
	Name       string `json:"name,omitempty"`
	User       string `json:"user,omitempty"`
	Campaign   string `json:"campaign,omitempty"`
	Variant    string `json:"variant,omitempty"`
	Properties string `json:"properties,omitempty"`
	Field      string `json:"field,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Dropped    int64  `json:"dropped,omitempty"`
}

// toLive turns an outcome of TailEvents into what the page shows.
func toLive(o *ingestv1.TailEventsResponse) liveOutcome {
	l := liveOutcome{Outcome: enumName(o.GetOutcome().String(), "EVENT_OUTCOME_"), Source: o.GetSource(),
		EventID: o.GetEventId(), Dropped: o.GetDropped()}
	if t := o.GetTime(); t != nil {
		l.Time = t.AsTime().UTC().Format(liveTimeFormat)
	}
	if e := o.GetEvent(); e != nil {
		l.Type = enumName(e.GetType().String(), "EVENT_TYPE_")
		l.Name, l.Campaign, l.Variant = e.GetName(), e.GetCampaignId(), e.GetVariant()
		l.User = e.GetUserId()
		if l.User == "" {
			l.User = e.GetAnonymousId()
		}
		if p := e.GetProperties(); len(p.GetFields()) > 0 {
			if b, err := protojson.Marshal(p); err == nil {
				l.Properties = truncateText(string(b), maxShownProperties)
			}
		}
	}
	if r := o.GetRejection(); r != nil {
		l.Field, l.Reason = r.GetField(), r.GetReason()
		if l.EventID == "" {
			l.EventID = r.GetEventId()
		}
	}
	return l
}

// truncateText cuts s to at most max bytes on a character boundary, marking the cut.
func truncateText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// eventsLive streams the tenant's event outcomes (text/event-stream): ingest's TailEvents
// sends the recent ones first, then the live ones. The tail ends when the browser goes away
// (the RPC's context is the request's). A role without events.debug gets a 403 answer, which
// ends the page's EventSource for good; ingest still decides: its refusals (and any problem
// later) arrive in the stream and are sent as a "problem" event before the stream ends. The
// EventSource then reconnects (as it does when ingest ends a tail after its maximum
// duration) unless the problem is final: reconnecting would meet the same refusal.
func (c *Console) eventsLive(rq *request) {
	if !rq.need("events.debug") {
		return
	}
	if c.api.Ingest == nil {
		rq.fail(errNoService)
		return
	}
	tail, err := c.api.Ingest.TailEvents(rq.ctx, &ingestv1.TailEventsRequest{})
	if err != nil {
		rq.fail(err)
		return
	}
	// Ingest sends its headers once the tail is open (or with its refusal): after them, "ready"
	// tells the page the tail is registered, so events sent from now on reach it.
	_, _ = tail.Header()
	s := rq.stream()
	defer s.close()
	_ = s.send("ready", map[string]string{})
	for {
		o, err := tail.Recv()
		if errors.Is(err, io.EOF) {
			return // ingest ended the tail (its maximum duration): the page reconnects
		}
		if err != nil {
			if rq.r.Context().Err() != nil {
				return // the browser went away
			}
			_, msg := explain(err)
			_ = s.send("problem", liveProblem{Message: msg, Final: finalProblem(status.Code(err))})
			return
		}
		if err := s.send("outcome", toLive(o)); err != nil {
			return // the browser went away
		}
	}
}

// liveProblem is a "problem" event of the live stream.
type liveProblem struct {
	Message string `json:"message"`
	// Final: reconnecting would be refused the same way; the page stops.
	Final bool `json:"final,omitempty"`
}

// finalProblem reports whether a tail's refusal holds until something changes (the role,
// the session, the number of open tails), rather than passing (a restart, a rollout).
func finalProblem(code codes.Code) bool {
	switch code {
	case codes.PermissionDenied, codes.Unauthenticated, codes.ResourceExhausted, codes.Unimplemented, codes.InvalidArgument:
		return true
	}
	return false
}
