package postgres_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// rowSource is a CSV file made row by row as it is read, counting the rows handed out: the
// importer can only hold what it has read.
type rowSource struct {
	rows    int
	next    int
	row     func(i int) string // i from 1
	pending []byte
	handed  atomic.Int64
}

func (r *rowSource) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.next > r.rows {
			return 0, io.EOF
		}
		if r.next == 0 {
			r.pending = []byte("email,user_id,first_name,attr.plan,consent.email\n")
		} else {
			r.pending = []byte(r.row(r.next) + "\n")
			r.handed.Add(1)
		}
		r.next++
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// watchedStore is the real store; it notes, at each batch, how far ahead of the stored rows
// the reader is.
type watchedStore struct {
	*postgres.Store
	src      *rowSource
	stored   int
	maxAhead int
	maxBatch int
	batches  int
}

func (w *watchedStore) UpsertContacts(ctx context.Context, tenantID string, us []delivery.ContactUpsert, now time.Time) ([]delivery.UpsertResult, error) {
	// Rows read but not stored before this call: what the importer holds in memory.
	w.maxAhead = max(w.maxAhead, int(w.src.handed.Load())-w.stored)
	w.batches++
	w.stored += len(us)
	w.maxBatch = max(w.maxBatch, len(us))
	return w.Store.UpsertContacts(ctx, tenantID, us, now)
}

// A 50,000-row file is imported as a stream: the importer is never more than about a batch
// ahead of what it stored, bad rows are reported by number and reason, and every good row is
// stored.
func TestImportCSVStreamed(t *testing.T) {
	s := openStore(t)
	const n = 50_000
	src := &rowSource{rows: n + 11}
	src.row = func(i int) string {
		switch {
		case i > n+1: // rows n+2 .. n+11 repeat the first ten emails: updates
			j := i - n - 1
			return fmt.Sprintf("user%d@example.com,,,upgraded,", j)
		case i == n+1: // the email of contact 2 and the user id of contact 3
			return "user2@example.com,u3,,,"
		case i == 777:
			return "user777@example.com,u777,Ann,pro,maybe"
		case i%1000 == 0:
			return fmt.Sprintf("not-an-email-%d,u%d,Ann,pro,granted", i, i)
		}
		consent := ""
		if i%2 == 0 {
			consent = "granted"
		}
		return fmt.Sprintf("user%d@example.com,u%d,Name%d,pro,%s", i, i, i, consent)
	}
	ws := &watchedStore{Store: s, src: src}
	a := delivery.NewAudiences(ws, nil)
	res, err := a.ImportCSV(context.Background(), "t1", src)
	if err != nil {
		t.Fatal(err)
	}
	bad := n/1000 + 2
	if res.Created != n-n/1000-1 || res.Updated != 10 || res.Failed != bad {
		t.Errorf("result created %d updated %d failed %d; want %d, 10, %d", res.Created, res.Updated, res.Failed, n-n/1000-1, bad)
	}
	limits := delivery.DefaultImportLimits
	if ws.maxBatch > limits.BatchSize || ws.batches < n/limits.BatchSize {
		t.Errorf("%d batches of at most %d rows; want batches of at most %d", ws.batches, ws.maxBatch, limits.BatchSize)
	}
	// Bounded: the importer never holds more than a batch (plus the CSV reader's buffer) of
	// rows read but not stored — not 50,000.
	if ws.maxAhead > limits.BatchSize+200 {
		t.Errorf("the importer read up to %d rows ahead of the store; want at most about one batch", ws.maxAhead)
	}
	if len(res.Errors) != bad {
		t.Fatalf("%d errors listed, want %d", len(res.Errors), bad)
	}
	rows := make([]int, len(res.Errors))
	for i, e := range res.Errors {
		rows[i] = e.Row
	}
	// Row numbers count the header as row 1.
	if !slices.IsSorted(rows) || rows[0] != 778 || rows[1] != 1001 || rows[len(rows)-1] != n+2 {
		t.Errorf("error rows %v…", rows[:3])
	}
	for _, e := range res.Errors {
		switch {
		case e.Row == 778 && !strings.Contains(e.Reason, "consent.email"):
			t.Errorf("row 778 reason %q", e.Reason)
		case e.Row == 1001 && !strings.HasPrefix(e.Reason, "email:"):
			t.Errorf("row 1001 reason %q", e.Reason)
		case e.Row == n+2 && !strings.Contains(e.Reason, "different contacts"):
			t.Errorf("conflict row reason %q", e.Reason)
		}
	}
	if got := count(t, s, `SELECT count(*) FROM contacts WHERE tenant_id = 't1'`); got != res.Created {
		t.Errorf("%d contacts stored, want %d", got, res.Created)
	}
	if got := count(t, s, `SELECT count(*) FROM contacts WHERE email_consent = 'granted' AND email_consent_source = 'csv_import'`); got != n/2-n/1000 {
		t.Errorf("%d contacts with imported consent, want %d", got, n/2-n/1000)
	}
	if got := count(t, s, `SELECT count(*) FROM contacts WHERE attributes->>'plan' = 'upgraded' AND attributes->>'first_name' LIKE 'Name%'`); got != 10 {
		t.Errorf("%d updated contacts kept their other fields, want 10", got)
	}
}

func TestImportCSVRows(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	many := []string{}
	for i := range delivery.MaxAttributes {
		many = append(many, fmt.Sprintf("attr.a%02d", i))
	}
	// A contact with MaxAttributes attributes already: one more key cannot be merged.
	if _, err := a.ImportCSV(ctx, "t1", strings.NewReader("user_id,"+strings.Join(many, ",")+"\nfull"+strings.Repeat(",x", delivery.MaxAttributes)+"\n")); err != nil {
		t.Fatal(err)
	}
	file := "\ufeffEmail, Phone ,user_id,first_name,attr.city,consent.email,consent.sms,time_zone,locale\n" +
		"ann@example.com,+1 (415) 555-0100,u1,Ann,\"Paris, France\",granted,revoked,Europe/Paris,fr-fr\n" + // row 2
		"bob@example.com,,u2,\"Bob\nthe second\",Lyon,,,,\n" + // row 3 spans two lines
		"carol@example.com,0612345678,u3,Carol,,,,,\n" + // 4: phone not E.164
		"dan@example.com,,u4,Dan\n" + // 5: too few fields
		",,,Nobody,Nice,,,,\n" + // 6: no identifier
		"eve@example.com,,u5,Eve,,,,Mars/Base,\n" + // 7: zone
		"ANN@example.com,,,,Lyon,,,,\n" + // 8: updates row 2's contact
		"frank@example.com,,full,,,,,,\n" + // 9: would get a 51st attribute? no: no attribute set
		"gina@example.com,,full,Gina,,,,,\n" + // 10: first_name would be the 51st attribute
		"hal@example.com,,u6,Hal,,,,,xx-!!\n" // 11: locale
	res, err := a.ImportCSV(ctx, "t1", strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != 2 || res.Updated != 2 || res.Failed != 6 {
		t.Errorf("result %+v; want 2 created, 2 updated, 6 failed", res)
	}
	want := map[int]string{4: "phone", 5: "fields", 6: "needs an email", 7: "time_zone", 10: "more than 50 attributes", 11: "locale"}
	for _, e := range res.Errors {
		if w, ok := want[e.Row]; !ok || !strings.Contains(e.Reason, w) {
			t.Errorf("row %d: %q, want a reason about %q", e.Row, e.Reason, want[e.Row])
		}
		delete(want, e.Row)
	}
	if len(want) != 0 {
		t.Errorf("rows not reported: %v", want)
	}
	cs, err := a.ExportContact(ctx, "t1", []delivery.Identifier{{Kind: delivery.IdentifierUserID, Value: "u1"}, {Kind: delivery.IdentifierUserID, Value: "u2"}})
	if err != nil || len(cs) != 2 {
		t.Fatalf("export: %v %v", cs, err)
	}
	for _, c := range cs {
		switch c.UserID {
		case "u1":
			if c.Phone != "+14155550100" || c.Attributes["city"] != "Lyon" || c.Attributes["first_name"] != "Ann" || c.TimeZone != "Europe/Paris" ||
				c.Locale != "fr-FR" || c.Consent.Email.State != delivery.ConsentGranted || c.Consent.SMS.State != delivery.ConsentRevoked ||
				c.Consent.SMS.Source != delivery.ConsentImportSource || c.Consent.SMS.Time.IsZero() {
				t.Errorf("ann %+v", c)
			}
		case "u2":
			if c.Attributes["first_name"] != "Bob\nthe second" || c.Consent.Email.State != delivery.ConsentUnknown {
				t.Errorf("bob %+v", c)
			}
		}
	}

	// Errors beyond MaxErrors are counted, not listed.
	small := delivery.NewAudiences(s, nil).WithImportLimits(delivery.ImportLimits{MaxBytes: 1 << 20, MaxRows: 100, MaxColumns: 10, MaxLineBytes: 200, BatchSize: 3, MaxErrors: 2})
	res, err = small.ImportCSV(ctx, "t1", strings.NewReader("email\nx\ny\nz\nok@example.com\n"))
	if err != nil || res.Failed != 3 || len(res.Errors) != 2 || res.Created != 1 {
		t.Errorf("capped errors: %+v %v", res, err)
	}
	// A row that is not valid CSV is reported, and the rows after it are still read.
	res, err = small.ImportCSV(ctx, "t1", strings.NewReader("email\nbare\"quote@example.com\nnext@example.com\n"))
	if err != nil || res.Failed != 1 || res.Created != 1 || len(res.Errors) != 1 || res.Errors[0].Row != 2 || !strings.Contains(res.Errors[0].Reason, "not valid CSV") {
		t.Errorf("bare quote: %+v %v", res, err)
	}
}

// Past a limit, the import stops with RESOURCE_EXHAUSTED, and what came before is stored and
// counted.
func TestImportCSVLimits(t *testing.T) {
	s := openStore(t)
	lim := delivery.ImportLimits{MaxBytes: 1 << 20, MaxRows: 5, MaxColumns: 10, MaxLineBytes: 100, BatchSize: 2, MaxErrors: 10}
	rows := func(from, to int) string {
		var b strings.Builder
		for i := from; i <= to; i++ {
			fmt.Fprintf(&b, "u%d@example.com\n", i)
		}
		return b.String()
	}
	for name, tc := range map[string]struct {
		lim     func(l *delivery.ImportLimits)
		file    string
		reason  string
		created int
	}{
		"rows":  {func(*delivery.ImportLimits) {}, "email\n" + rows(1, 9), "IMPORT_TOO_MANY_ROWS", 5},
		"bytes": {func(l *delivery.ImportLimits) { l.MaxBytes = int64(len("email\n" + rows(1, 3))) }, "email\n" + rows(1, 4), "IMPORT_TOO_LARGE", 3},
		"line":  {func(l *delivery.ImportLimits) {}, "email\n" + rows(1, 3) + strings.Repeat("x", 500) + "\n" + rows(4, 4), "IMPORT_LINE_TOO_LONG", 3},
		// A file without any line break is refused while reading its header.
		"header line": {func(*delivery.ImportLimits) {}, "email" + strings.Repeat(",attr.x", 1000), "IMPORT_LINE_TOO_LONG", 0},
	} {
		t.Run(name, func(t *testing.T) {
			l := lim
			tc.lim(&l)
			tenant := "t-" + name
			res, err := delivery.NewAudiences(s, nil).WithImportLimits(l).ImportCSV(context.Background(), tenant, strings.NewReader(tc.file))
			var de *apperr.Error
			if !asDomain(err, &de) || de.Code != apperr.ResourceExhausted || de.Reason != tc.reason {
				t.Fatalf("error %v, want %s", err, tc.reason)
			}
			if res.Created != tc.created {
				t.Errorf("created %d, want %d", res.Created, tc.created)
			}
			if got := count(t, s, `SELECT count(*) FROM contacts WHERE tenant_id = $1`, tenant); got != tc.created {
				t.Errorf("%d stored, want %d", got, tc.created)
			}
		})
	}
}
