package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// streamPing is how often an idle live stream sends a comment, so proxies keep it open and a
// browser that went away is noticed.
const streamPing = 20 * time.Second

// eventStream is a text/event-stream answer (the browser's EventSource): the live parts of the
// console (counters, live events). Data are JSON; the page's script puts them into the page as
// text, never as HTML.
type eventStream struct {
	mu   sync.Mutex
	w    http.ResponseWriter
	rc   *http.ResponseController
	stop chan struct{}
	err  error
}

// stream starts the answer. Call close when the stream ends.
func (rq *request) stream() *eventStream {
	h := rq.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	rq.w.WriteHeader(http.StatusOK)
	s := &eventStream{w: rq.w, rc: http.NewResponseController(rq.w), stop: make(chan struct{})}
	_ = s.rc.Flush()
	go func() {
		t := time.NewTicker(streamPing)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-rq.r.Context().Done():
				return
			case <-t.C:
				s.write(": ping\n\n")
			}
		}
	}()
	return s
}

// send writes one event named event with v as its JSON data.
func (s *eventStream) send(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var b strings.Builder
	if event != "" {
		fmt.Fprintf(&b, "event: %s\n", event)
	}
	fmt.Fprintf(&b, "data: %s\n\n", data) // JSON has no raw newlines
	return s.write(b.String())
}

func (s *eventStream) write(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, err := fmt.Fprint(s.w, text); err != nil {
		s.err = err
		return err
	}
	s.err = s.rc.Flush()
	return s.err
}

// close ends the pings.
func (s *eventStream) close() { close(s.stop) }
