package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
)

// consoleLive is an open /console/events/live stream, read as a browser's EventSource would.
type consoleLive struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	events []consoleSSE
	// markup is set when a data line carries a raw '<' (JSON escapes it; the page's script
	// would still put it in as text).
	markup bool
	done   chan struct{}
}

// consoleSSE is one server-sent event.
type consoleSSE struct {
	name string
	data map[string]any
}

// openLive opens the live events stream as c; the status is the answer's.
func (c *consoleClient) openLive(t *testing.T) (int, *consoleLive) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", c.m.url("/console/events/live"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open the live stream: %v", err)
	}
	l := &consoleLive{cancel: cancel, done: make(chan struct{})}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		cancel()
		close(l.done)
		return resp.StatusCode, l
	}
	go func() {
		defer close(l.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev := consoleSSE{name: name}
				_ = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
				l.mu.Lock()
				l.markup = l.markup || strings.Contains(line, "<")
				l.events = append(l.events, ev)
				l.mu.Unlock()
			case line == "":
				name = ""
			}
		}
	}()
	t.Cleanup(l.close)
	return resp.StatusCode, l
}

// find returns the first event named name whose data has every key/value of want.
func (l *consoleLive) find(name string, want map[string]any) (map[string]any, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, ev := range l.events {
		if ev.name != name {
			continue
		}
		for k, v := range want {
			if ev.data[k] != v {
				continue next
			}
		}
		return ev.data, true
	}
	return nil, false
}

// close is the browser going away.
func (l *consoleLive) close() {
	l.cancel()
	<-l.done
}

// consoleEvents: the live events page shows the stream's outcomes (recent ones first, then
// live), accepted and rejected with the reason, as JSON the page puts in as text; the stream
// ends its tail when the browser goes away; an analyst is refused page and stream.
func consoleEvents(t *testing.T, env *consoleEnv) {
	const evil = `<img src=x onerror=alert(1)>`
	code, body, _ := env.admin.get(t, "/console/events")
	if code != http.StatusOK {
		t.Fatalf("events page: %d", code)
	}
	host := strings.TrimPrefix(env.m.url(""), "https://")
	for _, want := range []string{`id="live-events"`, `/console/static/tail.js`, `data-source="/console/events/live"`,
		`id="live-pause"`, `id="live-filter"`, `https://` + host + `/v1/track`, `host: 'https://` + host + `'`} {
		if !strings.Contains(body, want) {
			t.Errorf("events page lacks %q", want)
		}
	}
	if code, body, hdr := env.admin.get(t, "/console/static/tail.js"); code != http.StatusOK || strings.Contains(body, "innerHTML") ||
		!strings.Contains(hdr.Get("Content-Type"), "javascript") {
		t.Errorf("tail.js: %d %q (innerHTML: %v)", code, hdr.Get("Content-Type"), strings.Contains(body, "innerHTML"))
	}

	send := func(events ...map[string]any) map[string]any {
		t.Helper()
		code, resp, _ := env.m.rest(t, "POST", "/v1/events:batch", env.token, map[string]any{"events": events})
		if code != http.StatusOK {
			t.Fatalf("send events: %d %v", code, resp)
		}
		return resp
	}
	// Before the stream opens: these come as the tail's recent history.
	resp := send(map[string]any{"eventId": "console-live-1", "type": "EVENT_TYPE_TRACK", "name": evil, "userId": "u-live", "campaignId": "live-c"},
		map[string]any{"eventId": "console-live-bad", "userId": "u-live"})
	rejected, _ := resp["rejected"].([]any)
	if resp["accepted"] != float64(1) || len(rejected) != 1 {
		t.Fatalf("send: %v", resp)
	}
	reason := rejected[0].(map[string]any)["reason"].(string)

	code, live := env.admin.openLive(t)
	if code != http.StatusOK {
		t.Fatalf("live stream: %d", code)
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		_, a := live.find("outcome", map[string]any{"outcome": "accepted", "eventId": "console-live-1", "name": evil, "campaign": "live-c", "type": "track"})
		_, r := live.find("outcome", map[string]any{"outcome": "rejected", "eventId": "console-live-bad", "reason": reason})
		return a && r
	}, "the recent outcomes are not in the live stream")
	live.mu.Lock()
	if live.markup {
		t.Errorf("the live stream carries raw markup")
	}
	live.mu.Unlock()
	// Live: sent after the stream opened.
	send(map[string]any{"eventId": "console-live-2", "type": "EVENT_TYPE_CLICK", "anonymousId": "anon-live", "campaignId": "live-c"},
		map[string]any{"eventId": "console-live-bad-2", "type": "EVENT_TYPE_TRACK"})
	meshtest.Eventually(t, 20*time.Second, func() bool {
		_, a := live.find("outcome", map[string]any{"outcome": "accepted", "eventId": "console-live-2", "user": "anon-live"})
		r, ok := live.find("outcome", map[string]any{"outcome": "rejected", "eventId": "console-live-bad-2"})
		return a && ok && r["reason"] != "" && r["field"] != ""
	}, "the live outcomes are not in the live stream")
	live.close()

	// Ingest allows 5 open tails a tenant: its refusal of one more arrives in the stream as a
	// final problem (the page stops reconnecting). Each stream is "ready" once ingest has
	// opened or refused its tail.
	var open []*consoleLive
	for i := 0; i < 6; i++ {
		code, l := env.admin.openLive(t)
		if code != http.StatusOK {
			t.Fatalf("live stream %d: %d", i, code)
		}
		meshtest.Eventually(t, 20*time.Second, func() bool { _, ok := l.find("ready", nil); return ok }, "live stream %d is not ready", i)
		open = append(open, l)
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		for _, l := range open {
			if p, ok := l.find("problem", map[string]any{"final": true}); ok && strings.Contains(p["message"].(string), "Too many requests") {
				return true
			}
		}
		return false
	}, "a 6th open tail is not refused in its stream")
	for _, l := range open {
		l.close()
	}

	// The tail ends when the browser goes away: opening and leaving more streams than ingest
	// allows open, one after the other, each still gets the events sent while it is open.
	attempt := 0
	for i := 0; i < 7; i++ {
		meshtest.Eventually(t, 30*time.Second, func() bool {
			attempt++
			id := fmt.Sprintf("console-seq-%d", attempt)
			code, l := env.admin.openLive(t)
			defer l.close()
			if code != http.StatusOK || !meshtest.Within(10*time.Second, func() bool { _, ok := l.find("ready", nil); return ok }) {
				return false
			}
			send(map[string]any{"eventId": id, "type": "EVENT_TYPE_TRACK", "name": "seq", "userId": "u-seq"})
			got := false
			meshtest.Within(10*time.Second, func() bool {
				_, got = l.find("outcome", map[string]any{"eventId": id, "outcome": "accepted"})
				_, refused := l.find("problem", nil)
				return got || refused
			})
			return got
		}, "live stream %d gets no events: the tails of the streams left before were not closed", i)
	}

	// The analyst (no events.debug) sees no link and is refused both.
	_, home, _ := env.analyst.get(t, "/console/")
	if strings.Contains(home, `href="/console/events"`) {
		t.Errorf("the analyst sees the Live events link")
	}
	if code, _, _ := env.analyst.get(t, "/console/events"); code != http.StatusForbidden {
		t.Errorf("analyst events page: %d, want 403", code)
	}
	if code, _ := env.analyst.openLive(t); code != http.StatusForbidden {
		t.Errorf("analyst live stream: %d, want 403", code)
	}
}
