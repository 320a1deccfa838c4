package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"google.golang.org/grpc/metadata"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	chstore "github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// tcpProxy forwards a loopback port to a target; pausing it closes every connection and refuses
// new ones, which is what a ClickHouse outage looks like to the writer.
type tcpProxy struct {
	addr, target string
	mu           sync.Mutex
	lis          net.Listener
	conns        map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{addr: freePort(t), target: target, conns: map[net.Conn]bool{}}
	p.resume(t)
	t.Cleanup(p.pause)
	return p
}

func (p *tcpProxy) resume(t *testing.T) {
	t.Helper()
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *tcpProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

func (p *tcpProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// backOff is a load sender's pause after a failed call (ingest away, say), ended early by the
// end of the load: pacing, not a wait for a condition.
func backOff(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(50 * time.Millisecond):
	}
}

// buildChaosAnalytics builds analytics with its fault injection (main_chaos.go) into dir.
func buildChaosAnalytics(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "analytics-chaos")
	if out, err := exec.Command("go", "build", "-tags", "chaos", "-o", bin, "../services/analytics/cmd/analytics").CombinedOutput(); err != nil {
		t.Fatalf("build analytics -tags chaos: %v\n%s", err, out)
	}
	return bin
}

// Fault test: under load, with two writers (analytics is writer 0 of 2, analytics-writer-1
// writer 1), kill -9 each writer in turn while the other keeps running (once exactly between an
// insert and its acks), kill -9 ingest, take ClickHouse away for a while; then every
// acknowledged event must be in ClickHouse exactly once, raw and in the rollup. CHAOS_DURATION (e.g. 3m, `make chaos`) runs a longer variant with
// repeated faults, ClickHouse outages growing 3 s, 6 s, 12 s… up to CHAOS_MAX_OUTAGE (default
// 1m), and prints the figures.
func TestNoAckedEventIsLostOrDuplicatedUnderFaults(t *testing.T) {
	t.Parallel()
	duration, maxOutage := 20*time.Second, 3*time.Second
	if d, err := time.ParseDuration(os.Getenv("CHAOS_DURATION")); err == nil && d > duration {
		// The long variant doubles the ClickHouse outage every round, up to CHAOS_MAX_OUTAGE.
		duration, maxOutage = d, time.Minute
		if m, err := time.ParseDuration(os.Getenv("CHAOS_MAX_OUTAGE")); err == nil && m > 0 {
			maxOutage = m
		}
	}
	proxy := startProxy(t, chtest.Addr())
	m := startMeshWith(t, meshConfig{clickhouse: []string{proxy.addr}, writers: 2})
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	client := ingestv1.NewIngestServiceClient(m.grpcConn(t))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)

	// Load: 4 senders of 100-event batches through the gateway; only acknowledged ids count.
	// 32 users: every stream partition, so both writers, has events.
	var mu sync.Mutex
	acked := map[string]bool{}
	var sent, failed int
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for s := 0; s < 4; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				req := &ingestv1.IngestEventsRequest{}
				for j := 0; j < 100; j++ {
					req.Events = append(req.Events, &ingestv1.Event{EventId: fmt.Sprintf("f-%d-%d-%d", s, i, j), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION, UserId: fmt.Sprintf("u%d", j%32), CampaignId: "c"})
				}
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := client.IngestEvents(callCtx, req)
				cancel()
				mu.Lock()
				sent++
				if err == nil && resp.GetAccepted() == 100 {
					for _, e := range req.Events {
						acked[e.GetEventId()] = true
					}
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil {
					backOff(loadCtx)
				}
			}
		}(s)
	}
	// loadGoesOn waits until the senders have 1,000 more events acknowledged: between faults the
	// pipeline carries load again, whatever the machine's speed.
	loadGoesOn := func(after string) {
		t.Helper()
		mu.Lock()
		before := len(acked)
		mu.Unlock()
		waitFor(t, "load after "+after, time.Minute, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= before+1000
		})
	}

	longestOutage := time.Duration(0)
	ingest := m.procs["ingest"]
	writers := []*proc{m.procs["analytics"], m.procs["analytics-writer-1"]}
	// The crash between an insert and its acks is injected by the chaos build of analytics
	// (-tags chaos): the normal binary has no fault flag.
	chaos := buildChaosAnalytics(t, m.dir)
	for _, w := range writers {
		w.bin = chaos
	}
	deadline := time.Now().Add(duration)
	for round := 0; round == 0 || time.Now().Before(deadline); round++ {
		// Each writer in turn, the other one running on: a restarted writer (same admin address,
		// so the same lease identity) takes its lease back at once.
		for i, w := range writers {
			loadGoesOn("the last fault")
			t.Logf("round %d: kill -9 writer %d", round, i)
			w.kill9()
			w.start("CM_ANALYTICS_FAULT_EXIT_AFTER_INSERTS=1")
			if !w.wait(30 * time.Second) { // it exits between its first insert and the acks
				t.Fatalf("writer %d did not reach the injected crash after an insert", i)
			}
			if !writers[1-i].alive() {
				t.Fatalf("writer %d stopped while writer %d was down", 1-i, i)
			}
			w.start()
		}
		loadGoesOn("the writers' restart")
		t.Logf("round %d: kill -9 ingest", round)
		ingest.kill9()
		time.Sleep(500 * time.Millisecond) // the fault under test: ingest away for half a second
		ingest.start()
		loadGoesOn("ingest's restart")
		outage := min(3*time.Second<<min(round, 10), maxOutage)
		t.Logf("round %d: ClickHouse away for %s", round, outage)
		proxy.pause()
		time.Sleep(outage) // the fault under test: ClickHouse away for the outage
		proxy.resume(t)
		longestOutage = max(longestOutage, outage)
	}
	loadGoesOn("the last outage")
	stopLoad()
	wg.Wait()

	admin := chtest.Admin(t)
	conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: m.clickhouseDB, Username: admin.Name, Password: admin.Password}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Wait for the writer to drain: every acked id present.
	var found map[string]uint64
	drained := func() bool {
		var ok bool
		found, ok = storedIDs(conn, acked)
		return ok
	}
	// Cheap polling first (reading every id back takes seconds at millions of events and would
	// slow the drain it waits for), then the full check. Not waitFor: past the deadline the
	// report below still says what is missing.
	drainStart := time.Now()
	deadline = time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		var n uint64
		if conn.QueryRow(context.Background(), `SELECT count() FROM events WHERE tenant_id != ''`).Scan(&n) == nil && n >= uint64(len(acked)) && drained() {
			break
		}
		time.Sleep(time.Second) // polling under a deadline
	}
	t.Logf("drained in %s", time.Since(drainStart).Round(time.Second))
	// An insert's rows show in events before its materialized view has written the rollup:
	// count once no writer insert is running.
	settleCtx, cancelSettle := context.WithTimeout(context.Background(), time.Minute)
	if _, err := chstore.NewEventSink(conn).Settle(settleCtx, nil); err != nil {
		t.Fatal(err)
	}
	cancelSettle()
	var lost, duplicated int
	var dupExample string
	for id := range acked {
		if found[id] == 0 {
			lost++
		}
	}
	for id, n := range found {
		if n > 1 {
			duplicated++
			dupExample = id
		}
	}
	var final uint64
	if err := conn.QueryRow(context.Background(), `SELECT uniqExact(tenant_id, event_id) FROM events WHERE tenant_id != ''`).Scan(&final); err != nil {
		t.Fatal(err)
	}
	// The rollup must count each event once too (merges never collapse its duplicates).
	var rolledUp uint64
	if err := conn.QueryRow(context.Background(), `SELECT countMerge(events) FROM events_hourly`).Scan(&rolledUp); err != nil {
		t.Fatal(err)
	}
	if rolledUp != uint64(len(found)) {
		duplicated += int(rolledUp) - len(found)
	}
	report := fmt.Sprintf("batches sent %d (failed %d), events acked %d, found %d (FINAL %d, rollup %d), lost %d, duplicated %d, longest ClickHouse outage %s",
		sent, failed, len(acked), len(found), final, rolledUp, lost, duplicated, longestOutage)
	t.Log(report)
	if os.Getenv("CHAOS_DURATION") != "" {
		fmt.Println("chaos:", report)
	}
	if lost != 0 || duplicated != 0 {
		t.Fatalf("%s (e.g. %s)", report, dupExample)
	}
	if len(acked) == 0 || !strings.HasPrefix(m.clickhouseDB, "test_") {
		t.Fatal("no event was acknowledged under load")
	}
}
