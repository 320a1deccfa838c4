package campaigns

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// OrderField is what a list is sorted by.
type OrderField string

// The sort keys.
const (
	OrderCreateTime OrderField = "create_time"
	OrderName       OrderField = "name"
)

// Order is a list's sort: a key, ascending or descending, ties broken by id the same way.
type Order struct {
	Field OrderField
	Desc  bool
}

// String is the order_by form.
func (o Order) String() string {
	if o.Desc {
		return string(o.Field) + " desc"
	}
	return string(o.Field)
}

// Cursor is the position after the last item of a page: its sort key and id.
type Cursor struct {
	CreateTime time.Time
	Name       string
	ID         string
}

// ListQuery selects, orders and pages campaigns of one tenant. Filters combine with AND.
type ListQuery struct {
	States      []State
	Channels    []Channel
	Tag         string
	NamePrefix  string
	WindowStart *time.Time
	WindowEnd   *time.Time
	Order       Order
	Size        int
	After       *Cursor
}

// ListRequest is the raw list request as a caller sends it.
type ListRequest struct {
	PageSize    int32
	PageToken   string
	States      []State
	Channels    []Channel
	Tag         string
	NamePrefix  string
	WindowStart *time.Time
	WindowEnd   *time.Time
	OrderBy     string
}

// ParseListRequest validates r and turns it into a query.
func ParseListRequest(r ListRequest) (ListQuery, error) {
	var v apperr.Violations
	q := ListQuery{Size: int(r.PageSize), Tag: r.Tag, NamePrefix: r.NamePrefix, WindowStart: r.WindowStart, WindowEnd: r.WindowEnd}
	switch {
	case r.PageSize < 0:
		v.Add("page_size", "must not be negative")
	case r.PageSize == 0:
		q.Size = DefaultPageSize
	case r.PageSize > MaxPageSize:
		q.Size = MaxPageSize
	}
	for _, s := range r.States {
		if !s.Valid() {
			v.Add("states", "unknown state")
			break
		}
	}
	for _, c := range r.Channels {
		if !slices.Contains(Channels, c) {
			v.Add("channels", "unknown channel")
			break
		}
	}
	if len(r.States) > len(States) || len(r.Channels) > len(Channels) {
		v.Add("states", "too many values")
	}
	q.States = slices.Compact(slices.Sorted(slices.Values(r.States)))
	q.Channels = slices.Compact(slices.Sorted(slices.Values(r.Channels)))
	if r.Tag != "" && !tagPattern.MatchString(r.Tag) {
		v.Add("tag", "is not a valid tag")
	}
	if !utf8.ValidString(r.NamePrefix) || utf8.RuneCountInString(r.NamePrefix) > MaxNameLen {
		v.Add("name_prefix", "must be valid UTF-8 of at most %d characters", MaxNameLen)
	}
	if r.WindowStart != nil && r.WindowEnd != nil && !r.WindowEnd.After(*r.WindowStart) {
		v.Add("window_end_time", "must be after window_start_time")
	}
	switch strings.Join(strings.Fields(strings.ToLower(r.OrderBy)), " ") {
	case "", "create_time", "create_time asc":
		q.Order = Order{Field: OrderCreateTime}
	case "create_time desc":
		q.Order = Order{Field: OrderCreateTime, Desc: true}
	case "name", "name asc":
		q.Order = Order{Field: OrderName}
	case "name desc":
		q.Order = Order{Field: OrderName, Desc: true}
	default:
		v.Add("order_by", `must be "create_time", "create_time desc", "name" or "name desc"`)
	}
	if r.PageToken != "" {
		c, err := decodeCursor(r.PageToken, q.fingerprint())
		if err != nil {
			v.Add("page_token", "is not a token from a previous page of this list (same filters and order_by)")
		}
		q.After = c
	}
	return q, v.Err()
}

// fingerprint identifies the filters and order, so a token only continues the list it
// came from.
func (q ListQuery) fingerprint() string {
	h := sha256.New()
	for _, s := range q.States {
		h.Write([]byte("s:" + s + "\x00"))
	}
	for _, c := range q.Channels {
		h.Write([]byte("c:" + c + "\x00"))
	}
	h.Write([]byte("t:" + q.Tag + "\x00n:" + strings.ToLower(q.NamePrefix) + "\x00o:" + q.Order.String() + "\x00"))
	for _, t := range []*time.Time{q.WindowStart, q.WindowEnd} {
		var b [8]byte
		if t != nil {
			binary.BigEndian.PutUint64(b[:], uint64(t.UnixNano()))
		}
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

type token struct {
	F string    `json:"f"`
	T time.Time `json:"t,omitzero"`
	N string    `json:"n,omitempty"`
	I string    `json:"i"`
}

// nextPageToken returns the token of the page after items, or "" when items is not full.
func (q ListQuery) nextPageToken(items []Campaign) string {
	if len(items) < q.Size || len(items) == 0 {
		return ""
	}
	last := items[len(items)-1]
	tok := token{F: q.fingerprint(), I: last.ID}
	if q.Order.Field == OrderName {
		tok.N = last.Name
	} else {
		tok.T = last.CreateTime.UTC()
	}
	b, _ := json.Marshal(tok)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, fingerprint string) (*Cursor, error) {
	var tok token
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil && len(raw) <= 2048 {
		err = json.Unmarshal(raw, &tok)
	}
	if err != nil || len(raw) > 2048 || tok.F != fingerprint || !uuidPattern.MatchString(tok.I) {
		return nil, apperr.New(apperr.Invalid, "INVALID_PAGE_TOKEN", "invalid page token")
	}
	return &Cursor{CreateTime: tok.T, Name: tok.N, ID: tok.I}, nil
}

// parseSeqToken parses the page token of a transitions list.
func parseSeqToken(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(string(raw), "seq:"), 10, 64)
	if err != nil || n < 1 || !strings.HasPrefix(string(raw), "seq:") {
		return 0, apperr.New(apperr.Invalid, "INVALID_PAGE_TOKEN", "invalid page token")
	}
	return n, nil
}

func seqToken(n int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("seq:" + strconv.FormatInt(n, 10)))
}
