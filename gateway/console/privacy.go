package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
)

// The privacy screens' limits: what the forms and queries accept before asking dsr (dsr has
// the same rules and its own).
const (
	dsrDefaultPage    = 25
	dsrMaxPage        = 100
	dsrMaxToken       = 1024
	dsrIdentifierRows = 3 // identifier rows of the create form
	dsrMaxValueLen    = 256
	dsrMaxReasonLen   = 500
	dsrMaxExtendDays  = 60
	dsrMaxRetention   = 3650
	dsrMaxRules       = 200
	dsrMaxRuleKeyLen  = 128
	dsrBlankRuleRows  = 3 // empty rule rows the policy form offers for new rules
	dsrMaxEtagLen     = 256
)

// dsrIdempotencyKey is an idempotency key as CreateRequest takes it.
var dsrIdempotencyKey = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// dsrID is the shape of a request id in a console address ("dsr_…"); anything else is no
// request, answered without asking dsr.
var dsrID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Choices of the forms and filters, in the order they are offered: the value the form sends
// and the API's enum name.
var (
	dsrStates = []choice{{"open", ""}, {"received", "STATE_RECEIVED"}, {"suppressing", "STATE_SUPPRESSING"},
		{"running", "STATE_RUNNING"}, {"verifying", "STATE_VERIFYING"}, {"completed", "STATE_COMPLETED"},
		{"failed", "STATE_FAILED"}, {"cancelled", "STATE_CANCELLED"}}
	dsrKinds = []choice{{"access", "KIND_ACCESS"}, {"erasure", "KIND_ERASURE"}, {"suppress", "KIND_SUPPRESS"},
		{"unsuppress", "KIND_UNSUPPRESS"}}
	dsrRegulations    = []choice{{"gdpr", "REGULATION_GDPR"}, {"ccpa", "REGULATION_CCPA"}}
	dsrIdentifierKind = []choice{{"user_id", "KIND_USER_ID"}, {"anonymous_id", "KIND_ANONYMOUS_ID"}, {"email", "KIND_EMAIL"}}
	policyActions     = []choice{{"keep", "PROPERTY_ACTION_KEEP"}, {"hash", "PROPERTY_ACTION_HASH"}, {"drop", "PROPERTY_ACTION_DROP"}}
	policyIP          = []choice{{"keep", "IP_HANDLING_KEEP"}, {"truncate", "IP_HANDLING_TRUNCATE"}, {"drop", "IP_HANDLING_DROP"}}
	policyUserAgent   = []choice{{"keep", "USER_AGENT_HANDLING_KEEP"}, {"drop", "USER_AGENT_HANDLING_DROP"}}
	// dsrOpenStates are the states of a request that has not ended.
	dsrOpenStates = []dsrv1.Request_State{dsrv1.Request_STATE_RECEIVED, dsrv1.Request_STATE_SUPPRESSING,
		dsrv1.Request_STATE_RUNNING, dsrv1.Request_STATE_VERIFYING}
)

// choice is one option of a select: the form's value and the API's enum name.
type choice struct{ Value, Enum string }

// pick finds the enum name of a form value; "" (not chosen) and unknown values give false.
func pick(cs []choice, v string) (string, bool) {
	for _, c := range cs {
		if c.Value == v && v != "" {
			return c.Enum, true
		}
	}
	return "", false
}

// valueOf is the form value of an enum name (for a select's current option).
func valueOf(cs []choice, enum string) string {
	for _, c := range cs {
		if c.Enum == enum {
			return c.Value
		}
	}
	return ""
}

func (c *Console) privacyRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"privacy", c.signedIn(c.privacyPage))
	m.HandleFunc("POST "+Prefix+"privacy/requests", c.signedIn(c.createDSR))
	m.HandleFunc("GET "+Prefix+"privacy/requests/{id}", c.signedIn(c.dsrPage))
	m.HandleFunc("POST "+Prefix+"privacy/requests/{id}/cancel", c.signedIn(c.cancelDSR))
	m.HandleFunc("POST "+Prefix+"privacy/requests/{id}/extend", c.signedIn(c.extendDSR))
	m.HandleFunc("GET "+Prefix+"privacy/requests/{id}/export", c.signedIn(c.downloadExport))
	m.HandleFunc("GET "+Prefix+"privacy/requests/{id}/receipt.json", c.signedIn(c.downloadReceipt))
	m.HandleFunc("GET "+Prefix+"privacy/policy", c.signedIn(c.policyPage))
	m.HandleFunc("POST "+Prefix+"privacy/policy", c.signedIn(c.updatePolicy))
}

// ---- the list and the create form ----

// dsrFilter is the request list's query.
type dsrFilter struct {
	State, Kind string // form values ("open", "completed", "access", …)
	Overdue     bool
	PageSize    int
	PageToken   string
}

// parseDSRFilter reads the request list's query.
func parseDSRFilter(q url.Values) (dsrFilter, *dsrv1.ListRequestsRequest, error) {
	f := dsrFilter{State: q.Get("state"), Kind: q.Get("kind"), Overdue: q.Get("overdue") == "1",
		PageToken: q.Get("page_token"), PageSize: dsrDefaultPage}
	req := &dsrv1.ListRequestsRequest{Overdue: f.Overdue, PageToken: f.PageToken}
	switch enum, ok := pick(dsrStates, f.State); {
	case f.State == "":
	case f.State == "open":
		req.States = dsrOpenStates
	case !ok:
		return f, nil, errors.New("the state is not one of the list")
	default:
		req.States = []dsrv1.Request_State{dsrv1.Request_State(dsrv1.Request_State_value[enum])}
	}
	if f.Kind != "" {
		enum, ok := pick(dsrKinds, f.Kind)
		if !ok {
			return f, nil, errors.New("the kind is not one of the list")
		}
		req.Kinds = []dsrv1.Kind{dsrv1.Kind(dsrv1.Kind_value[enum])}
	}
	if len(f.PageToken) > dsrMaxToken {
		return f, nil, errors.New("the page link is not valid")
	}
	if s := q.Get("size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > dsrMaxPage {
			return f, nil, fmt.Errorf("the page size is a number from 1 to %d", dsrMaxPage)
		}
		f.PageSize = n
	}
	req.PageSize = int32(f.PageSize)
	return f, req, nil
}

// link is the list's address with the filter and a page token.
func (f dsrFilter) link(pageToken string) string {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "kind": f.Kind, "page_token": pageToken} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Overdue {
		q.Set("overdue", "1")
	}
	if f.PageSize != dsrDefaultPage {
		q.Set("size", strconv.Itoa(f.PageSize))
	}
	if len(q) == 0 {
		return Prefix + "privacy"
	}
	return Prefix + "privacy?" + q.Encode()
}

// privacyList is the privacy page's data.
type privacyList struct {
	Filter                                 dsrFilter
	States, Kinds, Regulations, IdentKinds []choice
	Requests                               []dsrRow
	Next, First                            string
	// RequestID is the create form's idempotency key: a double submit creates one request.
	RequestID string
	// Rows numbers the create form's identifier rows.
	Rows []int
}

// dsrRow is a request with what the pages derive from it.
type dsrRow struct {
	*dsrv1.Request
	// Open: not completed, failed or cancelled.
	Open bool
	// Left is the time until the deadline (negative: overdue by), from now.
	Left time.Duration
}

func newDSRRow(r *dsrv1.Request, now time.Time) dsrRow {
	row := dsrRow{Request: r, Open: slices.Contains(dsrOpenStates, r.GetState())}
	if d := r.GetDeadlineTime(); d != nil {
		row.Left = d.AsTime().Sub(now).Truncate(time.Minute)
	}
	return row
}

// Overdue is true when the deadline passed and the request is open.
func (r dsrRow) Overdue() bool { return r.Open && r.Left < 0 }

func (c *Console) privacyPage(rq *request) {
	if c.api.DSR == nil {
		rq.fail(errNoService)
		return
	}
	f, req, err := parseDSRFilter(rq.r.URL.Query())
	if err != nil {
		rq.renderError(http.StatusBadRequest, "Please check the filter: "+err.Error()+".")
		return
	}
	resp, err := c.api.DSR.ListRequests(rq.ctx, req)
	if err != nil {
		rq.fail(err)
		return
	}
	p := privacyList{Filter: f, States: dsrStates, Kinds: dsrKinds, Regulations: dsrRegulations,
		IdentKinds: dsrIdentifierKind, RequestID: newRequestID()}
	for i := 1; i <= dsrIdentifierRows; i++ {
		p.Rows = append(p.Rows, i)
	}
	now := rq.now()
	for _, r := range resp.GetRequests() {
		p.Requests = append(p.Requests, newDSRRow(r, now))
	}
	if next := resp.GetNextPageToken(); next != "" {
		p.Next = f.link(next)
	}
	if f.PageToken != "" {
		p.First = f.link("")
	}
	rq.render("privacy", "Privacy", p)
}

// parseDSRForm reads the create form.
func parseDSRForm(form url.Values) (*dsrv1.CreateRequestRequest, error) {
	kind, ok := pick(dsrKinds, form.Get("kind"))
	if !ok {
		return nil, errors.New("choose what the request does")
	}
	reg, ok := pick(dsrRegulations, form.Get("regulation"))
	if !ok {
		return nil, errors.New("choose the regulation")
	}
	rid := form.Get("request_id")
	if !dsrIdempotencyKey.MatchString(rid) {
		return nil, errors.New("the form is damaged: reload the page")
	}
	r := &dsrv1.Request{Kind: dsrv1.Kind(dsrv1.Kind_value[kind]), Regulation: dsrv1.Regulation(dsrv1.Regulation_value[reg])}
	for i := 1; i <= dsrIdentifierRows; i++ {
		v := strings.TrimSpace(form.Get(fmt.Sprintf("value_%d", i)))
		if v == "" {
			continue
		}
		if len(v) > dsrMaxValueLen {
			return nil, fmt.Errorf("identifier %d is longer than %d characters", i, dsrMaxValueLen)
		}
		ik, ok := pick(dsrIdentifierKind, form.Get(fmt.Sprintf("ident_%d", i)))
		if !ok {
			return nil, fmt.Errorf("choose what identifier %d is", i)
		}
		r.Subject = append(r.Subject, &dsrv1.Identifier{Kind: dsrv1.Identifier_Kind(dsrv1.Identifier_Kind_value[ik]), Value: v})
	}
	if len(r.Subject) == 0 {
		return nil, errors.New("enter at least one identifier of the data subject")
	}
	return &dsrv1.CreateRequestRequest{Request: r, RequestId: rid}, nil
}

func (c *Console) createDSR(rq *request) {
	if !rq.need("dsr.manage") {
		return
	}
	if c.api.DSR == nil {
		rq.fail(errNoService)
		return
	}
	req, err := parseDSRForm(rq.r.PostForm)
	if err != nil {
		rq.renderError(http.StatusBadRequest, "Please check what you entered: "+err.Error()+".")
		return
	}
	created, err := c.api.DSR.CreateRequest(rq.ctx, req)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"privacy/requests/"+url.PathEscape(created.GetId()),
		fmt.Sprintf("The %s request %s was received.", enumName(created.GetKind().String(), "KIND_"), created.GetId()))
}

// ---- one request ----

// dsrDetail is the request page's data.
type dsrDetail struct {
	dsrRow
	Participants []participantRow
	// CanCancel and CanExtend: the actions dsr accepts in this state.
	CanCancel, CanExtend bool
	// Exportable: a completed access request whose export is still kept.
	Exportable    bool
	ExportRecords []countRow
	Receipt       *receiptView
	// ReceiptProblem says why the receipt is not shown, in words.
	ReceiptProblem string
	MaxExtendDays  int
}

// participantRow is one participant's progress.
type participantRow struct {
	*dsrv1.ParticipantStatus
	Counts []countRow
}

// countRow is one count of a map, in key order.
type countRow struct {
	Name  string
	Count int64
}

func sortedCounts(m map[string]int64) []countRow {
	rows := make([]countRow, 0, len(m))
	for k, v := range m {
		rows = append(rows, countRow{k, v})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows
}

// receiptView is a receipt as the page shows it, with dsr's verdict.
type receiptView struct {
	KeyID string
	// Payload is the signed document, indented for reading (the download keeps it as signed).
	Payload string
	Valid   bool
	// Reason says why it does not verify.
	Reason string
}

// dsrRequestID reads the {id} of the address; false (after a 404 page) when it cannot be one.
func (rq *request) dsrRequestID() (string, bool) {
	id := rq.r.PathValue("id")
	if !dsrID.MatchString(id) {
		rq.renderError(http.StatusNotFound, "There is no such request.")
		return "", false
	}
	if rq.c.api.DSR == nil {
		rq.fail(errNoService)
		return "", false
	}
	return id, true
}

func (c *Console) dsrPage(rq *request) {
	id, ok := rq.dsrRequestID()
	if !ok {
		return
	}
	r, err := c.api.DSR.GetRequest(rq.ctx, &dsrv1.GetRequestRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	d := dsrDetail{dsrRow: newDSRRow(r, rq.now()), MaxExtendDays: dsrMaxExtendDays}
	for _, p := range r.GetParticipants() {
		d.Participants = append(d.Participants, participantRow{ParticipantStatus: p, Counts: sortedCounts(p.GetCounts())})
	}
	st := r.GetState()
	d.CanCancel = st == dsrv1.Request_STATE_RECEIVED || st == dsrv1.Request_STATE_SUPPRESSING ||
		(r.GetKind() == dsrv1.Kind_KIND_ACCESS && d.Open)
	d.CanExtend = d.Open && r.GetExtension() == nil
	if ex := r.GetExport(); ex != nil && st == dsrv1.Request_STATE_COMPLETED && r.GetKind() == dsrv1.Kind_KIND_ACCESS {
		d.Exportable = ex.GetExpireTime() == nil || ex.GetExpireTime().AsTime().After(rq.now())
		d.ExportRecords = sortedCounts(ex.GetRecords())
	}
	if st == dsrv1.Request_STATE_COMPLETED {
		d.Receipt, d.ReceiptProblem = c.receipt(rq, id)
	}
	rq.render("privacy_request", "Request "+id, d)
}

// receipt reads a completed request's receipt and asks dsr whether it verifies. A problem
// leaves the rest of the request page in place, with the problem in words.
func (c *Console) receipt(rq *request, id string) (*receiptView, string) {
	rc, err := c.api.DSR.GetReceipt(rq.ctx, &dsrv1.GetReceiptRequest{Id: id})
	if err != nil {
		_, msg := explain(err)
		return nil, msg
	}
	v := &receiptView{KeyID: rc.GetKeyId(), Payload: rc.GetPayload()}
	var pretty bytes.Buffer
	if json.Indent(&pretty, []byte(rc.GetPayload()), "", "  ") == nil {
		v.Payload = pretty.String()
	}
	verdict, err := c.api.DSR.VerifyReceipt(rq.ctx, &dsrv1.VerifyReceiptRequest{Receipt: rc})
	if err != nil {
		_, msg := explain(err)
		v.Reason = "it could not be checked: " + msg
		return v, ""
	}
	v.Valid, v.Reason = verdict.GetValid(), verdict.GetReason()
	return v, ""
}

func (c *Console) cancelDSR(rq *request) {
	if !rq.need("dsr.manage") {
		return
	}
	id, ok := rq.dsrRequestID()
	if !ok {
		return
	}
	if _, err := c.api.DSR.CancelRequest(rq.ctx, &dsrv1.CancelRequestRequest{Id: id}); err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"privacy/requests/"+id, "The request was cancelled.")
}

// parseExtendForm reads the extend-deadline form.
func parseExtendForm(form url.Values) (int32, string, error) {
	days, err := strconv.Atoi(strings.TrimSpace(form.Get("days")))
	if err != nil || days < 1 || days > dsrMaxExtendDays {
		return 0, "", fmt.Errorf("the extension is a number of days from 1 to %d", dsrMaxExtendDays)
	}
	reason := strings.TrimSpace(form.Get("reason"))
	switch {
	case reason == "":
		return 0, "", errors.New("say why the deadline is extended (the data subject is told)")
	case len([]rune(reason)) > dsrMaxReasonLen:
		return 0, "", fmt.Errorf("the reason is longer than %d characters", dsrMaxReasonLen)
	}
	return int32(days), reason, nil
}

func (c *Console) extendDSR(rq *request) {
	if !rq.need("dsr.manage") {
		return
	}
	id, ok := rq.dsrRequestID()
	if !ok {
		return
	}
	days, reason, err := parseExtendForm(rq.r.PostForm)
	if err != nil {
		rq.renderError(http.StatusBadRequest, "Please check what you entered: "+err.Error()+".")
		return
	}
	if _, err := c.api.DSR.ExtendDeadline(rq.ctx, &dsrv1.ExtendDeadlineRequest{Id: id, Days: days, Reason: reason}); err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"privacy/requests/"+id, fmt.Sprintf("The deadline was extended by %d days.", days))
}

// downloadExport streams an access request's export as the REST API does (one JSON line per
// message: {"result": manifest}, then {"result": record}s; {"error": …} last if the stream
// broke), message by message: an export can be large, so it is never held in memory. An
// error before the first message is a page in words.
func (c *Console) downloadExport(rq *request) {
	id, ok := rq.dsrRequestID()
	if !ok {
		return
	}
	stream, err := c.api.DSR.DownloadExport(rq.ctx, &dsrv1.DownloadExportRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	first, err := stream.Recv() // the service's refusal arrives with the first message
	if err != nil {
		if errors.Is(err, io.EOF) {
			rq.renderError(http.StatusNotFound, "The export is empty.")
			return
		}
		rq.fail(err)
		return
	}
	h := rq.w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Content-Disposition", `attachment; filename="`+id+`-export.ndjson"`)
	rq.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(rq.w)
	for msg, n := first, 0; ; n++ {
		// Each line goes to the server's small response buffer, which sends it on when full.
		if err := writeExportLine(rq.w, "result", msg); err != nil {
			c.cfg.Logger.Warn("console: export download", "request", id, "err", err)
			return
		}
		if n == 0 {
			_ = rc.Flush() // the manifest now: the download starts before the records are read
		}
		if msg, err = stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				code, text := explain(err)
				c.cfg.Logger.Warn("console: export stream ended early", "request", id, "code", code)
				_ = writeExportLine(rq.w, "error", map[string]any{"code": int(status.Code(err)), "message": text})
			}
			break
		}
	}
	_ = rc.Flush()
}

// writeExportLine writes {"<key>": v} and a newline; v is a message or plain JSON.
func writeExportLine(w io.Writer, key string, v any) error {
	var b []byte
	var err error
	if m, ok := v.(*dsrv1.DownloadExportResponse); ok {
		b, err = protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m) // as the REST API writes it
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		return fmt.Errorf("encode export line: %w", err)
	}
	if _, err := fmt.Fprintf(w, `{"%s":%s}`+"\n", key, b); err != nil {
		return fmt.Errorf("write export line: %w", err)
	}
	return nil
}

// downloadReceipt answers the receipt as JSON, as `cmesh dsr receipt get` writes it (so
// `cmesh dsr receipt verify` checks the downloaded file).
func (c *Console) downloadReceipt(rq *request) {
	id, ok := rq.dsrRequestID()
	if !ok {
		return
	}
	rc, err := c.api.DSR.GetReceipt(rq.ctx, &dsrv1.GetReceiptRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(rc)
	if err != nil {
		rq.renderError(http.StatusInternalServerError, "The receipt could not be written. Try again.")
		return
	}
	h := rq.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", `attachment; filename="`+id+`-receipt.json"`)
	_, _ = rq.w.Write(append(b, '\n'))
}

// ---- the privacy policy ----

// policyForm is the policy editor's data.
type policyForm struct {
	Policy                         *dsrv1.PrivacyPolicy
	Default, IP, UserAgent         string // the current choices' form values
	Actions, IPChoices, UAChoices  []choice
	Rules                          []ruleRow
	MaxRetention, MaxRules, MaxKey int
}

// ruleRow is one row of the property rules: a rule, or an empty row for a new one.
type ruleRow struct {
	N           int
	Key, Action string
}

func (c *Console) policyPage(rq *request) {
	if c.api.DSR == nil {
		rq.fail(errNoService)
		return
	}
	p, err := c.api.DSR.GetPrivacyPolicy(rq.ctx, &dsrv1.GetPrivacyPolicyRequest{})
	if err != nil {
		rq.fail(err)
		return
	}
	f := policyForm{Policy: p, Actions: policyActions, IPChoices: policyIP, UAChoices: policyUserAgent,
		Default:      valueOf(policyActions, p.GetDefaultPropertyAction().String()),
		IP:           valueOf(policyIP, p.GetIpHandling().String()),
		UserAgent:    valueOf(policyUserAgent, p.GetUserAgentHandling().String()),
		MaxRetention: dsrMaxRetention, MaxRules: dsrMaxRules, MaxKey: dsrMaxRuleKeyLen}
	if f.Default == "" {
		f.Default = "keep"
	}
	if f.IP == "" {
		f.IP = "keep"
	}
	if f.UserAgent == "" {
		f.UserAgent = "keep"
	}
	for i, r := range p.GetPropertyRules() {
		f.Rules = append(f.Rules, ruleRow{N: i + 1, Key: r.GetKey(), Action: valueOf(policyActions, r.GetAction().String())})
	}
	for i := 0; i < dsrBlankRuleRows && len(f.Rules) < dsrMaxRules; i++ {
		f.Rules = append(f.Rules, ruleRow{N: len(f.Rules) + 1, Action: "hash"})
	}
	rq.render("privacy_policy", "Privacy policy", f)
}

// parsePolicyForm reads the policy editor: every field (the update replaces the whole policy,
// only if it is unchanged since the form was read: etag).
func parsePolicyForm(form url.Values) (*dsrv1.UpdatePrivacyPolicyRequest, error) {
	etag := form.Get("etag")
	if len(etag) > dsrMaxEtagLen {
		return nil, errors.New("the form is damaged: reload the page")
	}
	days, err := strconv.Atoi(strings.TrimSpace(form.Get("retention_days")))
	if err != nil || days < 0 || days > dsrMaxRetention {
		return nil, fmt.Errorf("the retention is a number of days from 0 (keep forever) to %d", dsrMaxRetention)
	}
	p := &dsrv1.PrivacyPolicy{RetentionDays: int32(days)}
	enum, ok := pick(policyActions, form.Get("default_action"))
	if !ok {
		return nil, errors.New("choose what happens to properties without a rule")
	}
	p.DefaultPropertyAction = dsrv1.PrivacyPolicy_PropertyAction(dsrv1.PrivacyPolicy_PropertyAction_value[enum])
	if enum, ok = pick(policyIP, form.Get("ip_handling")); !ok {
		return nil, errors.New("choose what happens to the client IP")
	}
	p.IpHandling = dsrv1.PrivacyPolicy_IPHandling(dsrv1.PrivacyPolicy_IPHandling_value[enum])
	if enum, ok = pick(policyUserAgent, form.Get("user_agent_handling")); !ok {
		return nil, errors.New("choose what happens to the user agent")
	}
	p.UserAgentHandling = dsrv1.PrivacyPolicy_UserAgentHandling(dsrv1.PrivacyPolicy_UserAgentHandling_value[enum])
	keys, actions := form["rule_key"], form["rule_action"]
	if len(keys) != len(actions) || len(keys) > dsrMaxRules+dsrBlankRuleRows {
		return nil, errors.New("the form is damaged: reload the page")
	}
	seen := map[string]bool{}
	for i, k := range keys {
		k = strings.TrimSpace(k)
		if k == "" {
			continue // an empty row, or a rule removed by clearing its key
		}
		if len(k) > dsrMaxRuleKeyLen {
			return nil, fmt.Errorf("the property key of rule %d is longer than %d characters", i+1, dsrMaxRuleKeyLen)
		}
		if seen[k] {
			return nil, fmt.Errorf("the property %q has two rules", k)
		}
		seen[k] = true
		enum, ok := pick(policyActions, actions[i])
		if !ok {
			return nil, fmt.Errorf("choose what happens to the property %q", k)
		}
		p.PropertyRules = append(p.PropertyRules, &dsrv1.PrivacyPolicy_PropertyRule{Key: k,
			Action: dsrv1.PrivacyPolicy_PropertyAction(dsrv1.PrivacyPolicy_PropertyAction_value[enum])})
	}
	if len(p.PropertyRules) > dsrMaxRules {
		return nil, fmt.Errorf("a policy has at most %d property rules", dsrMaxRules)
	}
	return &dsrv1.UpdatePrivacyPolicyRequest{Policy: p, Etag: etag}, nil
}

func (c *Console) updatePolicy(rq *request) {
	if !rq.need("privacy.manage") {
		return
	}
	if c.api.DSR == nil {
		rq.fail(errNoService)
		return
	}
	req, err := parsePolicyForm(rq.r.PostForm)
	if err != nil {
		rq.renderError(http.StatusBadRequest, "Please check what you entered: "+err.Error()+".")
		return
	}
	p, err := c.api.DSR.UpdatePrivacyPolicy(rq.ctx, req)
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"privacy/policy", fmt.Sprintf("The privacy policy was saved (version %d). Ingest and analytics apply it within 30 seconds.", p.GetVersion()))
}
