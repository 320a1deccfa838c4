package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// view is what every page template gets: the page's own data in .Data, and the signed-in
// user (nil on the sign-in page) for the layout's header and navigation.
type view struct {
	Title string
	Data  any
	Flash *flash
	rq    *request
	// Status is the HTTP status the page answers with.
	Status int
}

// Can reports whether the signed-in role holds a permission (templates: {{if .Can "x"}}).
func (v view) Can(permission string) bool { return v.rq != nil && v.rq.can(permission) }

// SignedIn reports whether the page has a signed-in user.
func (v view) SignedIn() bool { return v.rq != nil && v.rq.who != nil }

// Tenant, Subject and Role describe the signed-in user for the header.
func (v view) Tenant() string {
	if v.rq == nil {
		return ""
	}
	if v.rq.sess.Tenant == "" {
		return "platform"
	}
	return v.rq.sess.Tenant
}

// Subject is the signed-in user as they know themselves: the email they signed in with.
func (v view) Subject() string {
	if v.rq == nil || v.rq.who == nil {
		return ""
	}
	if v.rq.sess.Email != "" {
		return v.rq.sess.Email
	}
	return v.rq.who.GetSubject()
}

func (v view) Role() string {
	if v.rq == nil || v.rq.who == nil {
		return ""
	}
	return enumName(v.rq.who.GetRole().String(), "ROLE_")
}

// CSRF is the token every form posts back.
func (v view) CSRF() string {
	if v.rq == nil {
		return ""
	}
	return v.rq.sess.CSRF
}

// Current reports whether the page is under a navigation item's path.
func (v view) Current(prefix string) bool {
	if v.rq == nil {
		return false
	}
	if prefix == Prefix {
		return v.rq.Path == Prefix
	}
	return strings.HasPrefix(v.rq.Path, prefix)
}

var funcs = template.FuncMap{
	"time":     fmtTime,
	"utc":      utcTime,
	"iso":      isoTime,
	"number":   fmtNumber,
	"percent":  fmtPercent,
	"money":    fmtMoney,
	"enum":     enumName,
	"add":      func(a, b int) int { return a + b },
	"query":    func(kv ...string) template.URL { return template.URL(queryString(kv...)) },
	"duration": fmtDuration,
}

// parsePages parses each page template with the shared layout and partials.
func parsePages() (map[string]*template.Template, error) {
	shared, err := template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/_*.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") {
			continue
		}
		t, err := template.Must(shared.Clone()).ParseFS(templateFiles, name)
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(base, ".html")] = t
	}
	return pages, nil
}

// render writes a page: the named template (templates/<name>.html) in the layout.
func (rq *request) render(name, title string, data any) {
	rq.c.render(rq.w, rq.r, rq, http.StatusOK, name, title, data)
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, rq *request, code int, name, title string, data any) {
	t, ok := c.pages[name]
	if !ok {
		c.cfg.Logger.Error("console: no such page template", "page", name)
		http.Error(w, "This page is not available.", http.StatusInternalServerError)
		return
	}
	v := view{Title: title, Data: data, rq: rq, Status: code, Flash: c.sessions.takeFlash(w, r)}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.cfg.Logger.Error("console: render", "page", name, "err", err)
		http.Error(w, "This page could not be shown.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

// renderError shows a page that says what went wrong, in words.
func (rq *request) renderError(code int, message string) {
	rq.c.render(rq.w, rq.r, rq, code, "error", http.StatusText(code), message)
}

const codeUnauthenticated = codes.Unauthenticated

func grpcCode(err error) codes.Code { return status.Code(err) }

// fail shows a service's refusal in words with the matching HTTP status. The services'
// messages are written for callers (they never carry internals), so they are shown as they
// are, after a sentence that says what kind of problem it is.
func (rq *request) fail(err error) {
	code, text := explain(err)
	if code == http.StatusUnauthorized {
		clearCookie(rq.w, sessionCookie)
		http.Redirect(rq.w, rq.r, Prefix+"signin", http.StatusSeeOther)
		return
	}
	rq.renderError(code, text)
}

// explain turns a service error into an HTTP status and a sentence for people.
func explain(err error) (int, string) {
	if err == errNoService {
		return http.StatusNotImplemented, "This part of CampaignMesh is not part of this deployment."
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest, "Please check what you entered: " + msg + "."
	case codes.NotFound:
		return http.StatusNotFound, "It does not exist, or it is not visible to you."
	case codes.AlreadyExists:
		return http.StatusConflict, "It already exists: " + msg + "."
	case codes.Aborted:
		return http.StatusConflict, "Someone else changed this since you opened it. Reload the page to see the current version, then make your change again."
	case codes.FailedPrecondition:
		return http.StatusConflict, "This cannot be done now: " + msg + "."
	case codes.PermissionDenied:
		return http.StatusForbidden, "Your role does not allow this. Ask an administrator if you need it."
	case codes.Unauthenticated:
		return http.StatusUnauthorized, "Your session has ended. Sign in again."
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests, "Too many requests right now. Wait a moment and try again."
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable, "A service is not answering right now. Try again in a moment."
	default:
		return http.StatusInternalServerError, "Something went wrong on our side. Try again; if it keeps happening, tell your operator."
	}
}

// Formatting. Times are rendered as <time datetime=…> in UTC; the console's script shows them
// in the browser's time zone and keeps UTC in the title (hover).

func asTime(v any) time.Time {
	switch t := v.(type) {
	case *timestamppb.Timestamp:
		if t == nil {
			return time.Time{}
		}
		return t.AsTime()
	case time.Time:
		return t
	}
	return time.Time{}
}

func fmtTime(v any) template.HTML {
	t := asTime(v)
	if t.IsZero() {
		return "—"
	}
	u := t.UTC()
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`,
		u.Format(time.RFC3339), u.Format("2006-01-02 15:04:05 UTC"), u.Format("2006-01-02 15:04 UTC")))
}

func utcTime(v any) string {
	t := asTime(v)
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func isoTime(v any) string {
	t := asTime(v)
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtNumber(v any) string {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		n = int64(x)
	case float64:
		return strconv.FormatFloat(x, 'f', 2, 64)
	default:
		return fmt.Sprint(v)
	}
	neg := n < 0
	if neg {
		n = -n
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtPercent(ratio float64) string {
	if math.IsNaN(ratio) || math.IsInf(ratio, 0) {
		return "—"
	}
	return strconv.FormatFloat(ratio*100, 'f', 2, 64) + " %"
}

// fmtMoney formats micros of a currency, e.g. 12500000 EUR → "12.50 EUR".
func fmtMoney(micros int64, currency string) string {
	neg := micros < 0
	if neg {
		micros = -micros
	}
	units := fmtNumber(micros / 1_000_000)
	cents := (micros % 1_000_000) / 10_000
	s := fmt.Sprintf("%s.%02d %s", units, cents, currency)
	if neg {
		return "-" + s
	}
	return strings.TrimSpace(s)
}

func fmtDuration(d time.Duration) string {
	if d < 0 {
		return "overdue by " + fmtDuration(-d)
	}
	days := int(d / (24 * time.Hour))
	hours := int(d % (24 * time.Hour) / time.Hour)
	if days > 0 {
		return fmt.Sprintf("%d d %d h", days, hours)
	}
	return fmt.Sprintf("%d h %d min", hours, int(d%time.Hour/time.Minute))
}

// enumName turns STATE_ACTIVE (prefix "STATE_") into "active".
func enumName(name, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", " ")
}

func queryString(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[i]) + "=" + url.QueryEscape(kv[i+1]))
	}
	if b.Len() == 0 {
		return ""
	}
	return "?" + b.String()
}
