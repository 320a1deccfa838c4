package console

import (
	"bytes"
	"encoding/csv"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// csvTable is a table to download: a header row and the rows, all as text.
type csvTable struct {
	Header []string
	Rows   [][]string
}

// csvSafe neutralizes spreadsheet formula injection: a spreadsheet treats a cell that starts
// with = + - @ (or a tab or carriage return before one) as a formula, so such a cell gets a
// leading apostrophe and is shown as text. Numbers are left as they are (a negative uplift,
// "-0.25", is a number to the spreadsheet, not a formula); everything else that starts so,
// whatever column it is in, is neutralized, since variant names, event names and property
// values come from whoever sends events.
func csvSafe(cell string) string {
	if cell == "" || !strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
		return cell
	}
	if f, err := strconv.ParseFloat(cell, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return cell
	}
	return "'" + cell
}

// bytes writes the table as CSV (RFC 4180 quoting by encoding/csv, every cell csvSafe).
func (t csvTable) bytes() ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	row := make([]string, 0, len(t.Header))
	for _, r := range append([][]string{t.Header}, t.Rows...) {
		row = row[:0]
		for _, cell := range r {
			row = append(row, csvSafe(cell))
		}
		if err := w.Write(row); err != nil {
			return nil, err
		}
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

// sendCSV answers with the table as a CSV download named filename (letters, digits, '-', '_'
// and '.' only, so the header needs no quoting rules).
func (rq *request) sendCSV(filename string, t csvTable) {
	data, err := t.bytes()
	if err != nil {
		rq.c.cfg.Logger.Error("console: write csv", "err", err)
		rq.renderError(http.StatusInternalServerError, "The table could not be written as CSV.")
		return
	}
	h := rq.w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+safeFilename(filename)+`"`)
	rq.w.WriteHeader(http.StatusOK)
	_, _ = rq.w.Write(data)
}

// safeFilename keeps the characters of a file name that need no escaping anywhere.
func safeFilename(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "table.csv"
	}
	return b.String()
}

// csvInt writes a count.
func csvInt(n int64) string { return strconv.FormatInt(n, 10) }

// csvRatio writes a ratio as the API gives it (shortest exact form), or "" where it is
// undefined (a division by zero).
func csvRatio(r ratio) string {
	if !r.OK {
		return ""
	}
	return strconv.FormatFloat(r.V, 'g', -1, 64)
}

// csvMicros writes an amount of micros as a decimal number of currency units, exactly
// (12500000 → "12.5").
func csvMicros(micros int64) string {
	neg := micros < 0
	u := uint64(micros)
	if neg {
		u = uint64(-micros)
	}
	s := strconv.FormatUint(u/1_000_000, 10)
	if frac := u % 1_000_000; frac != 0 {
		s += "." + strings.TrimRight(strconv.FormatUint(frac+1_000_000, 10)[1:], "0")
	}
	if neg {
		return "-" + s
	}
	return s
}
