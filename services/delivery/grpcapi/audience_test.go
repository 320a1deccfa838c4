package grpcapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/gateway"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
	"github.com/campaignmesh/campaignmesh/services/delivery/grpcapi"
)

// csvFile generates a contacts file of n data rows on demand (never held whole): row i (2..n+1,
// the header being 1) is contact i, with granted email consent on even rows; bad rows get an
// invalid email.
type csvFile struct {
	n   int
	bad map[int]bool
	// allBad makes every row bad (quick to import: nothing is stored).
	allBad bool
	i      int
	buf    []byte
}

func (f *csvFile) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		switch {
		case f.i == 0:
			f.buf = []byte("email,user_id,first_name,consent.email\n")
		case f.i > f.n:
			return 0, io.EOF
		default:
			row := f.i + 1
			email := fmt.Sprintf("c%d@example.com", row)
			if f.bad[row] || f.allBad {
				email = "not an email"
			}
			consent := ""
			if row%2 == 0 {
				consent = "granted"
			}
			f.buf = fmt.Appendf(nil, "%s,u%d,Name %d,%s\n", email, row, row, consent)
		}
		f.i++
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// importFile streams r to ImportContacts in chunks of size bytes.
func importFile(ctx context.Context, client deliveryv1.DeliveryServiceClient, r io.Reader, size int) (*deliveryv1.ImportContactsResponse, error) {
	stream, err := client.ImportContacts(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&deliveryv1.ImportContactsRequest{Chunk: buf[:n]}); err != nil {
				break // the server answered early: CloseAndRecv tells
			}
		}
		if rerr != nil {
			break
		}
	}
	return stream.CloseAndRecv()
}

// A 50,000-row file streamed in 64 KiB chunks is imported whole, with its bad rows reported by
// line and column and the call audited once; importing it again changes nothing and says so.
func TestImportContactsStreamed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite))
	const n = 50_000
	bad := map[int]bool{777: true, 40_001: true}
	before, err := e.d.Outbox().Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := importFile(ctx, e.client, &csvFile{n: n, bad: bad}, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCreated() != n-2 || resp.GetUpdated() != 0 || resp.GetUnchanged() != 0 || resp.GetFailed() != 2 || len(resp.GetErrors()) != 2 {
		t.Fatalf("import: %v", resp)
	}
	for i, line := range []int32{777, 40_001} {
		if re := resp.GetErrors()[i]; re.GetLine() != line || re.GetColumn() != "email" || !strings.Contains(re.GetReason(), "email") {
			t.Errorf("error %d: %v, want line %d column email", i, re, line)
		}
	}
	if after, _ := e.d.Outbox().Pending(context.Background()); after != before+1 {
		t.Errorf("%d audit records for one import, want 1", after-before)
	}
	var stored int
	if err := e.d.Store().Pool().QueryRow(context.Background(), `SELECT count(*) FROM contacts WHERE tenant_id = 't1' AND attributes->>'first_name' LIKE 'Name %'`).Scan(&stored); err != nil || stored != n-2 {
		t.Fatalf("%d contacts stored (%v), want %d", stored, err, n-2)
	}

	// The same file again: every good row finds its contact holding the same values.
	resp, err = importFile(ctx, e.client, &csvFile{n: n, bad: bad}, 1<<20-1024)
	if err != nil || resp.GetCreated() != 0 || resp.GetUpdated() != 0 || resp.GetUnchanged() != n-2 || resp.GetFailed() != 2 {
		t.Fatalf("second import: %v %v", resp, err)
	}
}

// A row spanning two lines (a quoted line break) moves the lines of the rows after it: errors
// name the line a row starts on; a bad header fails the import before anything is stored.
func TestImportContactsLinesAndHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsWrite))
	file := "email,first_name,time_zone\n" +
		"ann@example.com,\"Ann\nSecond line\",Europe/Paris\n" + // lines 2-3
		"bob@example.com,Bob,Mars/Base\n" + // line 4: zone
		"carol@example.com,Carol,\n" // line 5
	resp, err := importFile(ctx, e.client, strings.NewReader(file), 7)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCreated() != 2 || resp.GetFailed() != 1 || resp.GetErrors()[0].GetLine() != 4 || resp.GetErrors()[0].GetColumn() != "time_zone" {
		t.Fatalf("import: %v", resp)
	}
	_, err = importFile(ctx, e.client, strings.NewReader("email,shoe_size\nx@example.com,42\n"), 1024)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad header: %v, want INVALID_ARGUMENT", err)
	}
	// A chunk over the limit is refused, not buffered.
	_, err = importFile(ctx, e.client, strings.NewReader("email\n"+strings.Repeat("x", grpcapi.MaxImportChunk)), grpcapi.MaxImportChunk+1)
	if code := status.Code(err); code != codes.InvalidArgument && code != codes.ResourceExhausted {
		t.Errorf("oversized chunk: %v", err)
	}
}

// A file over the import limit stops with RESOURCE_EXHAUSTED (reason IMPORT_TOO_LARGE): no
// success is answered, and the message says where the import stopped.
func TestImportContactsOverLimit(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *app.Config) { c.ImportMaxBytes = 200 << 10 })
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsWrite))
	_, err := importFile(ctx, e.client, &csvFile{n: 20_000}, 32<<10)
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "stopped") || !strings.Contains(st.Message(), "were imported (") || reasonOf(st) != "IMPORT_TOO_LARGE" {
		t.Fatalf("over the limit: %v (%s)", err, reasonOf(st))
	}
	// What was stored is within the limit (whole batches before it), never the whole file.
	var stored int
	if err := e.d.Store().Pool().QueryRow(context.Background(), `SELECT count(*) FROM contacts`).Scan(&stored); err != nil || stored >= 20_000 ||
		!strings.Contains(st.Message(), fmt.Sprintf("(%d created,", stored)) {
		t.Errorf("%d contacts stored (%v); the answer says %q", stored, err, st.Message())
	}
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

// CountSegment counts a saved segment's or an ad-hoc filter's contacts as they are now, and
// those eligible per channel: suppressed contacts, contacts without the channel's address and
// contacts without granted consent are not.
func TestCountSegment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bg := context.Background()
	ctx := meshtest.Bearer(bg, e.apiKey("t1", contactsRead))
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "form"}
	mk := func(c delivery.Contact) delivery.Contact {
		c.Attributes = map[string]string{"plan": "pro"}
		got, err := e.aud.CreateContact(bg, "t1", c)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	mk(delivery.Contact{Email: "a@example.com", Phone: "+14155550101", Consent: delivery.Consents{Email: granted, SMS: granted}})
	mk(delivery.Contact{Email: "b@example.com", Consent: delivery.Consents{Email: granted, SMS: granted}}) // no phone
	mk(delivery.Contact{Email: "c@example.com"})                                                           // no consent
	s := mk(delivery.Contact{Email: "d@example.com", Consent: delivery.Consents{Email: granted}})
	if _, err := e.aud.Suppress(bg, "t1", s.ID, "bounce"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.aud.CreateContact(bg, "t1", delivery.Contact{Email: "free@example.com", Attributes: map[string]string{"plan": "free"}, Consent: delivery.Consents{Email: granted}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.aud.CreateContact(bg, "t2", delivery.Contact{Email: "a@example.com", Attributes: map[string]string{"plan": "pro"}, Consent: delivery.Consents{Email: granted}}); err != nil {
		t.Fatal(err)
	}
	seg := e.segmentIn(t, "t1") // plan = pro
	want := func(name string, resp *deliveryv1.CountSegmentResponse, err error, contacts, email, sms int64) {
		t.Helper()
		got := map[deliveryv1.Channel]int64{}
		for _, c := range resp.GetChannels() {
			got[c.GetChannel()] = c.GetEligible()
		}
		if err != nil || resp.GetContacts() != contacts || got[deliveryv1.Channel_CHANNEL_EMAIL] != email || got[deliveryv1.Channel_CHANNEL_SMS] != sms {
			t.Errorf("%s: %v %v; want %d contacts, %d email, %d sms", name, resp, err, contacts, email, sms)
		}
	}
	resp, err := e.client.CountSegment(ctx, &deliveryv1.CountSegmentRequest{Target: &deliveryv1.CountSegmentRequest_SegmentId{SegmentId: seg.ID}})
	want("saved", resp, err, 4, 2, 1)
	resp, err = e.client.CountSegment(ctx, &deliveryv1.CountSegmentRequest{Target: &deliveryv1.CountSegmentRequest_Filter{Filter: &deliveryv1.SegmentFilter{}}})
	want("everyone", resp, err, 5, 3, 1)
	resp, err = e.client.CountSegment(ctx, &deliveryv1.CountSegmentRequest{Target: &deliveryv1.CountSegmentRequest_Filter{Filter: &deliveryv1.SegmentFilter{
		ConsentGranted: []deliveryv1.Channel{deliveryv1.Channel_CHANNEL_SMS}}}})
	want("sms consent", resp, err, 2, 2, 1)
	if _, err := e.client.CountSegment(ctx, &deliveryv1.CountSegmentRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no target: %v", err)
	}
	if _, err := e.client.CountSegment(ctx, &deliveryv1.CountSegmentRequest{Target: &deliveryv1.CountSegmentRequest_Filter{Filter: &deliveryv1.SegmentFilter{
		Behaviour: &deliveryv1.BehaviourCondition{EventType: "click", WithinDays: 30}}}}); status.Code(err) != codes.Unavailable {
		t.Errorf("behaviour without analytics: %v, want UNAVAILABLE", err)
	}
}

func newEnvWith(t *testing.T, config func(*app.Config)) *env {
	t.Helper()
	issuer := meshtest.NewIssuer(t)
	keys := &keyring{jwt: issuer.Verifier()}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Verifier: keys, Config: config})
	conn := servicetest.Dial(t, d.Addr(), d.CA, "gateway", "delivery")
	return &env{d: d, aud: d.Audiences(), conn: conn, client: deliveryv1.NewDeliveryServiceClient(conn), issuer: issuer, keys: keys}
}

// The import over REST through the real gateway: the body is streamed into the RPC (a 50,000-row
// file sent without a length), rows are reported by line, and the edge refuses what it can
// before anything is stored.
func TestImportContactsOverREST(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *app.Config) { c.ImportMaxBytes = 4 << 20 })
	rest := servicetest.NewREST(t, serviceDesc, gateway.Backend{Package: "campaignmesh.delivery.v1", Conn: e.conn,
		RegisterREST: deliveryv1.RegisterDeliveryServiceHandler})
	key := e.apiKey("t1", contactsWrite)
	count := func() int {
		var n int
		if err := e.d.Store().Pool().QueryRow(context.Background(), `SELECT count(*) FROM contacts`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	const n = 50_000
	st, data := rest.Post("/v1/contacts:import", "text/csv; charset=utf-8", struct{ io.Reader }{&csvFile{n: n, bad: map[int]bool{12_345: true}}}, key)
	var resp struct {
		Created, Failed string
		Errors          []struct {
			Line   int
			Column string
		}
	}
	if err := json.Unmarshal(data, &resp); st != http.StatusOK || err != nil {
		t.Fatalf("import: HTTP %d %s", st, data)
	}
	if resp.Created != fmt.Sprint(n-1) || resp.Failed != "1" || len(resp.Errors) != 1 || resp.Errors[0].Line != 12_345 || resp.Errors[0].Column != "email" {
		t.Fatalf("import: %s", data)
	}
	if got := count(); got != n-1 {
		t.Fatalf("%d contacts stored, want %d", got, n-1)
	}

	// Declared larger than the edge's limit: 413 before anything reaches delivery.
	req := func(body io.Reader, length int64, ctype, token string) (int, string) {
		hreq, _ := http.NewRequest(http.MethodPost, rest.URL()+"/v1/contacts:import", body)
		hreq.ContentLength = length
		hreq.Header.Set("Content-Type", ctype)
		if token != "" {
			hreq.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(hreq)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	before := count()
	// (Written by hand: Go's client will not declare a length it does not send.)
	conn, err := net.Dial("tcp", strings.TrimPrefix(rest.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/contacts:import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\nemail\n",
		key, gateway.ContactsImportMaxBytes+1)
	hresp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hresp.Body)
	if hresp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "nothing was imported") {
		t.Errorf("declared too large: %d %s", hresp.StatusCode, body)
	}
	// Over delivery's limit while streamed: 413, and the answer says the import stopped.
	if st, body := req(struct{ io.Reader }{&csvFile{n: 200_000, allBad: true}}, -1, "text/csv", key); st != http.StatusRequestEntityTooLarge || !strings.Contains(body, "stopped") {
		t.Errorf("streamed too large: %d %s", st, body)
	}
	if st, _ := req(strings.NewReader("email\nz@example.com\n"), -1, "application/json", key); st != http.StatusUnsupportedMediaType {
		t.Errorf("not text/csv: %d", st)
	}
	if st, _ := req(strings.NewReader("email\nz@example.com\n"), -1, "text/csv", ""); st != http.StatusUnauthorized {
		t.Errorf("no credential: %d", st)
	}
	if st, _ := req(strings.NewReader("email\nz@example.com\n"), -1, "text/csv", e.apiKey("t1", contactsRead)); st != http.StatusForbidden {
		t.Errorf("without contacts.write: %d", st)
	}
	if st, _ := req(strings.NewReader("shoe_size\n42\n"), -1, "text/csv", key); st != http.StatusBadRequest {
		t.Errorf("bad header: %d", st)
	}
	if got := count(); got < before {
		t.Errorf("contacts lost: %d, were %d", got, before)
	}
}
