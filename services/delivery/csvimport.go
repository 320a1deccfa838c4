package delivery

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// ImportLimits bound a CSV import. The importer holds one batch of rows at a time, never the
// whole file.
type ImportLimits struct {
	// MaxBytes is the most bytes read from the file; beyond it the import stops.
	MaxBytes int64
	// MaxRows is the most data rows; beyond it the import stops.
	MaxRows int
	// MaxColumns is the most columns of the header.
	MaxColumns int
	// MaxLineBytes is the longest physical line: a file without line breaks cannot make the
	// CSV reader buffer it whole.
	MaxLineBytes int
	// BatchSize is how many rows go to the store in one transaction.
	BatchSize int
	// MaxErrors is how many row errors the result lists (all are counted).
	MaxErrors int
}

// DefaultImportLimits are the limits of NewAudiences.
var DefaultImportLimits = ImportLimits{
	MaxBytes:     256 << 20,
	MaxRows:      1_000_000,
	MaxColumns:   MaxAttributes + 10,
	MaxLineBytes: 64 << 10,
	BatchSize:    500,
	MaxErrors:    100,
}

// ConsentImportSource is the source recorded for a consent set by a CSV import.
const ConsentImportSource = "csv_import"

// RowError is why one row of an import was not stored. Row counts records from 1, the header
// being row 1 (as a spreadsheet numbers them).
type RowError struct {
	Row int
	// Line is the physical line the row starts on (1 is the header's): a quoted line break
	// makes a row span lines, so Line and Row differ after one.
	Line int
	// Column is the field at fault ("email", "attributes.plan"…), "" for the row as a whole.
	Column string
	Reason string
}

// ImportResult counts what an import did.
type ImportResult struct {
	// Unchanged counts rows that matched a contact already holding every value they give.
	Created, Updated, Unchanged, Failed int
	// Errors are the first ImportLimits.MaxErrors row errors, in row order.
	Errors []RowError
}

// The columns an import understands, besides attr.<name>.
const (
	colEmail        = "email"
	colPhone        = "phone"
	colUserID       = "user_id"
	colTimeZone     = "time_zone"
	colLocale       = "locale"
	colConsentEmail = "consent.email"
	colConsentSMS   = "consent.sms"
	attrPrefix      = "attr."
)

// shorthandAttrs are common attributes accepted without the attr. prefix.
var shorthandAttrs = []string{"first_name", "last_name"}

// ImportCSV reads contacts from r, a CSV file whose header row names the columns (email, phone,
// user_id, first_name, last_name, time_zone, locale, consent.email, consent.sms and
// attr.<name>), and upserts them into the tenant row by row: a row's identifiers find an
// existing contact to update, else it creates one; empty cells change nothing; consent cells
// are granted, revoked or empty. A bad row is counted and reported with its number and reason
// and never fails the import. The import fails only for a bad header, a limit passed (what
// came before it is stored and counted), a broken reader or the database. Its batches commit
// one by one, so no audit record is taken here: the access layer records the call itself.
func (a *Audiences) ImportCSV(ctx context.Context, tenantID string, r io.Reader) (ImportResult, error) {
	var res ImportResult
	if err := audienceTenant(tenantID); err != nil {
		return res, err
	}
	lim := a.limits
	lr := &limitedReader{r: r, left: lim.MaxBytes, maxLine: lim.MaxLineBytes}
	cr := csv.NewReader(lr)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = 0 // the header's count, checked per row
	header, err := cr.Read()
	if err != nil {
		return res, headerError(err, lr)
	}
	cols, err := parseHeader(header, lim.MaxColumns)
	if err != nil {
		return res, err
	}
	imp := &importer{a: a, tenantID: tenantID, res: &res, maxErrors: lim.MaxErrors, batch: make([]pendingRow, 0, lim.BatchSize)}
	now := a.now().UTC()
	row := 1
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		row++
		if err != nil && lr.err != nil {
			return res, errors.Join(imp.flush(ctx), lr.err)
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			imp.fail(RowError{Row: row, Line: pe.StartLine, Reason: csvReason(pe)})
			continue
		}
		if err != nil {
			return res, errors.Join(imp.flush(ctx), fmt.Errorf("read csv: %w", err))
		}
		if row-1 > lim.MaxRows {
			return res, errors.Join(imp.flush(ctx), apperr.New(apperr.ResourceExhausted, "IMPORT_TOO_MANY_ROWS", "the file has more than %d rows; the first %d were imported", lim.MaxRows, lim.MaxRows))
		}
		line, _ := cr.FieldPos(0) // the record was read whole: it has a field 0
		u, err := cols.upsert(rec, now)
		if err != nil {
			imp.fail(RowError{Row: row, Line: line, Column: columnOf(err), Reason: reasonOf(err)})
			continue
		}
		imp.batch = append(imp.batch, pendingRow{row: row, line: line, u: u})
		if len(imp.batch) >= lim.BatchSize {
			if err := imp.flush(ctx); err != nil {
				return res, err
			}
		}
	}
	if err := imp.flush(ctx); err != nil {
		return res, err
	}
	return res, nil
}

type pendingRow struct {
	row, line int
	u         ContactUpsert
}

type importer struct {
	a         *Audiences
	tenantID  string
	res       *ImportResult
	maxErrors int
	batch     []pendingRow
}

// fail counts a bad row and keeps the first maxErrors by row number: a batch's store outcomes
// arrive after later rows' validation errors, so a row may be inserted before ones listed.
func (imp *importer) fail(re RowError) {
	imp.res.Failed++
	errs := imp.res.Errors
	i, _ := slices.BinarySearchFunc(errs, re.Row, func(e RowError, r int) int { return e.Row - r })
	if i >= imp.maxErrors {
		return
	}
	errs = slices.Insert(errs, i, re)
	if len(errs) > imp.maxErrors {
		errs = errs[:imp.maxErrors]
	}
	imp.res.Errors = errs
}

// flush upserts the pending rows and counts their outcomes.
func (imp *importer) flush(ctx context.Context) error {
	if len(imp.batch) == 0 {
		return nil
	}
	us := make([]ContactUpsert, len(imp.batch))
	for i, p := range imp.batch {
		us[i] = p.u
	}
	rs, err := imp.a.store.UpsertContacts(ctx, imp.tenantID, us, imp.a.now().UTC())
	if err != nil {
		return fmt.Errorf("import rows %d-%d: %w", imp.batch[0].row, imp.batch[len(imp.batch)-1].row, err)
	}
	for i, r := range rs {
		switch r.Outcome {
		case UpsertCreated:
			imp.res.Created++
		case UpsertUpdated:
			imp.res.Updated++
		case UpsertUnchanged:
			imp.res.Unchanged++
		case UpsertConflict:
			p := imp.batch[i]
			imp.fail(RowError{Row: p.row, Line: p.line, Reason: "email, phone and user_id belong to different contacts"})
		case UpsertTooManyAttributes:
			p := imp.batch[i]
			imp.fail(RowError{Row: p.row, Line: p.line, Column: "attributes", Reason: fmt.Sprintf("the contact would have more than %d attributes", MaxAttributes)})
		}
	}
	imp.batch = imp.batch[:0]
	return nil
}

// columns maps the header's columns to the fields they set.
type columns struct {
	names []string // per column: a field name, or attr.<key>
}

func parseHeader(header []string, maxColumns int) (*columns, error) {
	var v apperr.Violations
	if len(header) > maxColumns {
		v.Add("header", "at most %d columns", maxColumns)
		return nil, v.Err()
	}
	cols := &columns{names: make([]string, len(header))}
	seen := map[string]bool{}
	hasID := false
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch {
		case name == colEmail, name == colPhone, name == colUserID:
			hasID = true
		case name == colTimeZone, name == colLocale, name == colConsentEmail, name == colConsentSMS:
		case slices.Contains(shorthandAttrs, name):
			name = attrPrefix + name
		case strings.HasPrefix(name, attrPrefix) && attrKey.MatchString(name[len(attrPrefix):]):
		default:
			v.Add("header", "column %d %q: unknown; use email, phone, user_id, first_name, last_name, time_zone, locale, consent.email, consent.sms or attr.<name>", i+1, truncate(h, 80))
			continue
		}
		if seen[name] {
			v.Add("header", "column %d %q appears twice", i+1, truncate(h, 80))
		}
		seen[name] = true
		cols.names[i] = name
	}
	if !hasID && len(v) == 0 {
		v.Add("header", "needs an email, phone or user_id column")
	}
	return cols, v.Err()
}

// upsert turns one record into an upsert, validated.
func (cols *columns) upsert(rec []string, now time.Time) (ContactUpsert, error) {
	var u ContactUpsert
	if len(rec) != len(cols.names) {
		return u, fmt.Errorf("has %d fields, the header %d", len(rec), len(cols.names))
	}
	for i, name := range cols.names {
		val := strings.TrimSpace(rec[i])
		if val == "" {
			continue
		}
		switch name {
		case colEmail:
			u.Email = val
		case colPhone:
			u.Phone = val
		case colUserID:
			u.UserID = val
		case colTimeZone:
			u.TimeZone = val
		case colLocale:
			u.Locale = val
		case colConsentEmail, colConsentSMS:
			st := ConsentState(strings.ToLower(val))
			if st != ConsentGranted && st != ConsentRevoked {
				return u, fmt.Errorf("%s: must be granted, revoked or empty", name)
			}
			c := Consent{State: st, Source: ConsentImportSource, Time: now}
			if name == colConsentEmail {
				u.Consent.Email = c
			} else {
				u.Consent.SMS = c
			}
		default:
			if u.Attributes == nil {
				u.Attributes = map[string]string{}
			}
			u.Attributes[name[len(attrPrefix):]] = val
		}
	}
	u.normalize()
	return u, u.validate()
}

// reasonOf is the text of a row's error: the violations, without internals.
func reasonOf(err error) string {
	var de *apperr.Error
	if errors.As(err, &de) && len(de.Violations) > 0 {
		parts := make([]string, len(de.Violations))
		for i, v := range de.Violations {
			parts[i] = v.Field + ": " + v.Description
		}
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

// columnOf is the field of a row's first violation, "" when the error is about the row.
func columnOf(err error) string {
	var de *apperr.Error
	if errors.As(err, &de) && len(de.Violations) > 0 {
		return de.Violations[0].Field
	}
	return ""
}

func csvReason(pe *csv.ParseError) string {
	return fmt.Sprintf("not valid CSV at line %d: %v", pe.Line, pe.Err)
}

func headerError(err error, lr *limitedReader) error {
	if lr.err != nil {
		return lr.err
	}
	var v apperr.Violations
	if errors.Is(err, io.EOF) {
		v.Add("file", "is empty: the first row must name the columns")
	} else {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			v.Add("header", "%s", csvReason(pe))
		} else {
			return fmt.Errorf("read csv header: %w", err)
		}
	}
	return v.Err()
}

// limitedReader stops a file at a size and a line length with a domain error (io.LimitReader
// would end it silently, as if the file were complete).
type limitedReader struct {
	r       io.Reader
	left    int64
	maxLine int
	line    int
	err     error
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	// Hand over what precedes a violation: the rows before it are imported; the error comes
	// with the next read.
	for i := range n {
		if p[i] == '\n' {
			l.line = 0
		} else if l.line++; l.line > l.maxLine {
			l.err = apperr.New(apperr.ResourceExhausted, "IMPORT_LINE_TOO_LONG", "a line is longer than %d bytes; the import stopped there", l.maxLine)
			n = i
			break
		}
	}
	if int64(n) > l.left {
		n = int(l.left)
		l.err = apperr.New(apperr.ResourceExhausted, "IMPORT_TOO_LARGE", "the file is larger than the import limit; the import stopped there")
	}
	l.left -= int64(n)
	if l.err != nil {
		return n, nil
	}
	return n, err
}
