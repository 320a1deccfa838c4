package console

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// Campaign screens: the list, one campaign (state, transitions, history, pacing), and the
// create/edit form. Every figure comes from the campaigns and analytics services called with
// the user's token.

const (
	campaignPageSizeDefault = 25
	campaignPageSizeMax     = 100
	campaignSearchMax       = 200
	campaignTokenMax        = 1024
	// campaignMetricsDays is the range of the inline metrics on the list and a campaign's page.
	campaignMetricsDays = 30
	// campaignHistoryPage is how many transitions a campaign's page shows at a time.
	campaignHistoryPage = 50
)

func (c *Console) campaignRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"campaigns", c.signedIn(c.campaignsPage))
	m.HandleFunc("GET "+Prefix+"campaigns/new", c.signedIn(c.newCampaignPage))
	m.HandleFunc("POST "+Prefix+"campaigns", c.signedIn(c.createCampaign))
	m.HandleFunc("GET "+Prefix+"campaigns/{id}", c.signedIn(c.campaignPage))
	m.HandleFunc("GET "+Prefix+"campaigns/{id}/edit", c.signedIn(c.editCampaignPage))
	m.HandleFunc("POST "+Prefix+"campaigns/{id}/edit", c.signedIn(c.updateCampaign))
	m.HandleFunc("POST "+Prefix+"campaigns/{id}/delete", c.signedIn(c.deleteCampaign))
	for _, a := range campaignActions {
		m.HandleFunc("POST "+Prefix+"campaigns/{id}/"+a.Name, c.signedIn(func(rq *request) { c.transitionCampaign(rq, a) }))
	}
}

// campaignAction is a state transition a user can make, with the states it applies to
// (the service's state machine; the service decides, the page only offers what can work).
type campaignAction struct {
	// Name is the action's path segment; Label the button's text.
	Name, Label string
	From        []campaignsv1.Campaign_State
	// Confirm is asked before an action that cannot be undone.
	Confirm string
}

var campaignActions = []campaignAction{
	{Name: "schedule", Label: "Schedule", From: states(campaignsv1.Campaign_STATE_DRAFT)},
	{Name: "activate", Label: "Activate", From: states(campaignsv1.Campaign_STATE_SCHEDULED)},
	{Name: "pause", Label: "Pause", From: states(campaignsv1.Campaign_STATE_ACTIVE, campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED)},
	{Name: "resume", Label: "Resume", From: states(campaignsv1.Campaign_STATE_PAUSED)},
	{Name: "complete", Label: "Complete", Confirm: "Complete this campaign now? It stops for good.",
		From: states(campaignsv1.Campaign_STATE_ACTIVE, campaignsv1.Campaign_STATE_PAUSED, campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED)},
	{Name: "cancel", Label: "Cancel", Confirm: "Cancel this campaign? It stops for good.",
		From: states(campaignsv1.Campaign_STATE_SCHEDULED, campaignsv1.Campaign_STATE_ACTIVE, campaignsv1.Campaign_STATE_PAUSED, campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED)},
	{Name: "archive", Label: "Archive", Confirm: "Archive this campaign? It becomes read-only.",
		From: states(campaignsv1.Campaign_STATE_DRAFT, campaignsv1.Campaign_STATE_COMPLETED, campaignsv1.Campaign_STATE_CANCELLED)},
}

func states(s ...campaignsv1.Campaign_State) []campaignsv1.Campaign_State { return s }

// actionsFrom are the transitions valid in a state, in the order of the buttons.
func actionsFrom(s campaignsv1.Campaign_State) []campaignAction {
	var out []campaignAction
	for _, a := range campaignActions {
		if slices.Contains(a.From, s) {
			out = append(out, a)
		}
	}
	return out
}

// campaignStates are the states the list's filter offers.
var campaignStates = []campaignsv1.Campaign_State{
	campaignsv1.Campaign_STATE_DRAFT, campaignsv1.Campaign_STATE_SCHEDULED, campaignsv1.Campaign_STATE_ACTIVE,
	campaignsv1.Campaign_STATE_PAUSED, campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED, campaignsv1.Campaign_STATE_COMPLETED,
	campaignsv1.Campaign_STATE_CANCELLED, campaignsv1.Campaign_STATE_ARCHIVED,
}

// campaignSorts are the list's orders (what ListCampaigns can order by), by their URL value.
var campaignSorts = []struct{ Value, Label, OrderBy string }{
	{"newest", "Newest first", "create_time desc"},
	{"oldest", "Oldest first", "create_time"},
	{"name", "Name A–Z", "name"},
	{"name_desc", "Name Z–A", "name desc"},
}

// campaignListQuery is the list's query string, checked.
type campaignListQuery struct {
	Q, State, Sort, Token string
	Size                  int
}

// parseCampaignListQuery checks the list's query string; a problem is a sentence for a 400.
func parseCampaignListQuery(q url.Values) (campaignListQuery, *campaignsv1.ListCampaignsRequest, string) {
	lq := campaignListQuery{Q: strings.TrimSpace(q.Get("q")), State: q.Get("state"), Sort: q.Get("sort"),
		Token: q.Get("page_token"), Size: campaignPageSizeDefault}
	req := &campaignsv1.ListCampaignsRequest{NamePrefix: lq.Q, PageToken: lq.Token}
	if len([]rune(lq.Q)) > campaignSearchMax || strings.ContainsFunc(lq.Q, func(r rune) bool { return r < ' ' }) {
		return lq, nil, "The search may be at most 200 characters on one line."
	}
	if len(lq.Token) > campaignTokenMax {
		return lq, nil, "The page link is not valid. Start again from the first page."
	}
	if s := q.Get("size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > campaignPageSizeMax {
			return lq, nil, "The page size must be a whole number from 1 to 100."
		}
		lq.Size = n
	}
	req.PageSize = int32(lq.Size)
	if lq.State != "" {
		st, ok := campaignStateByName(lq.State)
		if !ok {
			return lq, nil, "There is no campaign state called that. Choose one from the list."
		}
		req.States = []campaignsv1.Campaign_State{st}
	}
	if lq.Sort == "" {
		lq.Sort = campaignSorts[0].Value
	}
	i := slices.IndexFunc(campaignSorts, func(s struct{ Value, Label, OrderBy string }) bool { return s.Value == lq.Sort })
	if i < 0 {
		return lq, nil, "The list cannot be sorted that way. Choose an order from the list."
	}
	req.OrderBy = campaignSorts[i].OrderBy
	return lq, req, ""
}

// campaignStateByName reads a state as URLs name it ("budget_exhausted").
func campaignStateByName(name string) (campaignsv1.Campaign_State, bool) {
	for _, s := range campaignStates {
		if stateSlug(s) == name {
			return s, true
		}
	}
	return campaignsv1.Campaign_STATE_UNSPECIFIED, false
}

// stateSlug is a state's name in URLs: "budget_exhausted".
func stateSlug(s campaignsv1.Campaign_State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

type campaignRow struct {
	C *campaignsv1.Campaign
	M *analyticsv1.Metrics
}

type campaignsPageData struct {
	Query      campaignListQuery
	Rows       []campaignRow
	Next       string
	States     []campaignsv1.Campaign_State
	Sorts      []struct{ Value, Label, OrderBy string }
	Metrics    bool
	MetricsErr string
	Days       int
	Filtered   bool
}

// StateSlug is a state's URL name, for the filter's options.
func (campaignsPageData) StateSlug(s campaignsv1.Campaign_State) string { return stateSlug(s) }

func (c *Console) campaignsPage(rq *request) {
	if c.api.Campaigns == nil {
		rq.fail(errNoService)
		return
	}
	lq, req, problem := parseCampaignListQuery(rq.r.URL.Query())
	if problem != "" {
		rq.renderError(http.StatusBadRequest, problem)
		return
	}
	resp, err := c.api.Campaigns.ListCampaigns(rq.ctx, req)
	if err != nil {
		rq.fail(err)
		return
	}
	d := campaignsPageData{Query: lq, Next: resp.GetNextPageToken(), States: campaignStates, Sorts: campaignSorts,
		Days: campaignMetricsDays, Filtered: lq.Q != "" || lq.State != ""}
	ids := make([]string, 0, len(resp.GetCampaigns()))
	for _, x := range resp.GetCampaigns() {
		d.Rows = append(d.Rows, campaignRow{C: x})
		ids = append(ids, x.GetId())
	}
	if rq.can("analytics.read") && c.api.Analytics != nil && len(ids) > 0 {
		d.Metrics = true
		metrics, err := c.campaignMetrics(rq, ids, rq.now())
		if err != nil {
			_, d.MetricsErr = explain(err)
		}
		for i := range d.Rows {
			d.Rows[i].M = metrics[d.Rows[i].C.GetId()]
		}
	}
	rq.render("campaigns", "Campaigns", d)
}

// campaignMetrics totals the campaigns' metrics over the last campaignMetricsDays with one
// GetCampaignSummary call (at most 100 campaigns, the list's largest page). The range starts
// on a whole hour so the rollups can answer most of it.
func (c *Console) campaignMetrics(rq *request, ids []string, now time.Time) (map[string]*analyticsv1.Metrics, error) {
	start := now.Truncate(time.Hour).Add(-campaignMetricsDays * 24 * time.Hour)
	resp, err := c.api.Analytics.GetCampaignSummary(rq.ctx, &analyticsv1.GetCampaignSummaryRequest{
		CampaignIds: ids, StartTime: timestamppb.New(start), EndTime: timestamppb.New(now)})
	if err != nil {
		return nil, err
	}
	out := make(map[string]*analyticsv1.Metrics, len(ids))
	for _, row := range resp.GetCampaigns() {
		out[row.GetCampaignId()] = row.GetMetrics()
	}
	return out, nil
}

// campaignID is the {id} of the path, or a 404 page when it cannot be a campaign's id.
func campaignID(rq *request) (string, bool) {
	id := rq.r.PathValue("id")
	if !campaignIDPattern.MatchString(id) {
		rq.renderError(http.StatusNotFound, "There is no such campaign.")
		return "", false
	}
	return id, true
}

type campaignPageData struct {
	C           *campaignsv1.Campaign
	Actions     []campaignAction
	History     []*campaignsv1.CampaignTransition
	HistoryNext string
	HistoryErr  string
	Pacing      *campaignsv1.CampaignPacing
	PacingErr   string
	Metrics     *analyticsv1.Metrics
	MetricsErr  string
	ShowMetrics bool
	Days        int
}

// CanEdit reports whether any field may still change (archived campaigns are read-only).
func (d campaignPageData) CanEdit() bool {
	return d.C.GetState() != campaignsv1.Campaign_STATE_ARCHIVED
}

// CanDelete reports whether the campaign is a draft, the only deletable state.
func (d campaignPageData) CanDelete() bool {
	return d.C.GetState() == campaignsv1.Campaign_STATE_DRAFT
}

// StateClass is the state's CSS classes' names ("budget exhausted").
func (d campaignPageData) StateClass() string { return enumName(d.C.GetState().String(), "STATE_") }

func (c *Console) campaignPage(rq *request) {
	id, ok := campaignID(rq)
	if !ok {
		return
	}
	if c.api.Campaigns == nil {
		rq.fail(errNoService)
		return
	}
	hTok := rq.r.URL.Query().Get("history")
	if len(hTok) > campaignTokenMax {
		rq.renderError(http.StatusBadRequest, "The history page link is not valid. Open the campaign again.")
		return
	}
	camp, err := c.api.Campaigns.GetCampaign(rq.ctx, &campaignsv1.GetCampaignRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	d := campaignPageData{C: camp, Actions: actionsFrom(camp.GetState()), Days: campaignMetricsDays}
	hist, err := c.api.Campaigns.ListCampaignTransitions(rq.ctx, &campaignsv1.ListCampaignTransitionsRequest{
		Id: id, PageSize: campaignHistoryPage, PageToken: hTok})
	if err != nil {
		code, msg := explain(err)
		if code == http.StatusBadRequest && hTok != "" {
			rq.renderError(code, msg)
			return
		}
		d.HistoryErr = msg
	} else {
		d.History, d.HistoryNext = hist.GetTransitions(), hist.GetNextPageToken()
	}
	if camp.GetBudget().GetTotalMicros() > 0 {
		if p, err := c.api.Campaigns.GetCampaignPacing(rq.ctx, &campaignsv1.GetCampaignPacingRequest{Id: id}); err != nil {
			_, d.PacingErr = explain(err)
		} else {
			d.Pacing = p
		}
	}
	if rq.can("analytics.read") && c.api.Analytics != nil {
		d.ShowMetrics = true
		m, err := c.campaignMetrics(rq, []string{id}, rq.now())
		if err != nil {
			_, d.MetricsErr = explain(err)
		} else {
			d.Metrics = m[id]
		}
	}
	rq.render("campaign", camp.GetName(), d)
}

// newRequestID is a create form's idempotency key (campaigns, data-subject requests): a double
// submit creates one.
func newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "console-" + hex.EncodeToString(b)
}

// renderCampaignForm shows the create or edit form, with the problems of the last try.
func (rq *request) renderCampaignForm(code int, f campaignForm) {
	f.Channels = campaignChannels
	f.Zones = campaignZones
	f.Variants = formRows(f.Variants, f.Editing() && f.Locked("variants"))
	title := "New campaign"
	if f.Editing() {
		title = "Edit " + f.Name
	}
	rq.c.render(rq.w, rq.r, rq, code, "campaign_form", title, f)
}

// campaignZones are offered as suggestions; any IANA zone may be typed.
var campaignZones = []string{"UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York",
	"America/Chicago", "America/Denver", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Tokyo",
	"Asia/Singapore", "Asia/Kolkata", "Australia/Sydney"}

func (c *Console) newCampaignPage(rq *request) {
	if !rq.need("campaigns.write") {
		return
	}
	rq.renderCampaignForm(http.StatusOK, campaignForm{State: campaignsv1.Campaign_STATE_DRAFT, RequestID: newRequestID(),
		Channel: "web", Currency: "EUR", Pacing: "asap"})
}

func (c *Console) createCampaign(rq *request) {
	if !rq.need("campaigns.write") {
		return
	}
	if c.api.Campaigns == nil {
		rq.fail(errNoService)
		return
	}
	f, camp, problems := parseCampaignForm(rq.r.PostForm)
	f.State = campaignsv1.Campaign_STATE_DRAFT
	if f.RequestID == "" {
		f.RequestID = newRequestID()
	}
	if len(problems) > 0 {
		rq.renderCampaignForm(http.StatusBadRequest, f)
		return
	}
	created, err := c.api.Campaigns.CreateCampaign(rq.ctx, &campaignsv1.CreateCampaignRequest{Campaign: camp, RequestId: f.RequestID})
	if err != nil {
		// Nothing was created: the corrected form is a new request (the same id with other
		// fields would be refused as reused).
		f.RequestID = newRequestID()
		if rq.formRefused(err, &f) {
			return
		}
		rq.fail(err)
		return
	}
	rq.done(Prefix+"campaigns/"+url.PathEscape(created.GetId()), "Campaign created as a draft.")
}

// formRefused shows the form again, kept, when the service refused what it says (a 400 in
// words); other errors are the caller's to show.
func (rq *request) formRefused(err error, f *campaignForm) bool {
	code, msg := explain(err)
	if code != http.StatusBadRequest {
		return false
	}
	f.Problems = append(f.Problems, msg)
	rq.renderCampaignForm(code, *f)
	return true
}

// editForm is the form for a campaign as it is now.
func editForm(camp *campaignsv1.Campaign) campaignForm {
	f, _, _ := parseCampaignForm(campaignValues(camp))
	f.Problems = nil
	f.ID, f.Etag, f.State, f.editing = camp.GetId(), camp.GetEtag(), camp.GetState(), true
	return f
}

func (c *Console) editCampaignPage(rq *request) {
	id, ok := c.writableCampaign(rq)
	if !ok {
		return
	}
	camp, err := c.api.Campaigns.GetCampaign(rq.ctx, &campaignsv1.GetCampaignRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	if camp.GetState() == campaignsv1.Campaign_STATE_ARCHIVED {
		rq.renderError(http.StatusConflict, "This campaign is archived: it can no longer change.")
		return
	}
	rq.renderCampaignForm(http.StatusOK, editForm(camp))
}

func (c *Console) updateCampaign(rq *request) {
	id, ok := c.writableCampaign(rq)
	if !ok {
		return
	}
	etag := rq.r.PostFormValue("etag")
	if etag == "" || len(etag) > 128 {
		rq.renderError(http.StatusBadRequest, "This form is missing the campaign's version. Open the campaign again and edit it from there.")
		return
	}
	cur, err := c.api.Campaigns.GetCampaign(rq.ctx, &campaignsv1.GetCampaignRequest{Id: id})
	if err != nil {
		rq.fail(err)
		return
	}
	submitted := rq.r.PostForm
	f, next, problems := parseCampaignForm(mergeCampaignValues(campaignValues(cur), submitted))
	f.ID, f.Etag, f.State, f.editing = id, etag, cur.GetState(), true
	if len(problems) > 0 {
		rq.renderCampaignForm(http.StatusBadRequest, f)
		return
	}
	mask := campaignUpdateMask(submitted, cur, next)
	if len(mask) == 0 {
		if cur.GetEtag() != etag {
			rq.renderError(http.StatusConflict, "Someone else changed this since you opened it. Reload the page to see the current version, then make your change again.")
			return
		}
		rq.done(Prefix+"campaigns/"+url.PathEscape(id), "Nothing changed.")
		return
	}
	next.Id, next.Etag = id, etag
	_, err = c.api.Campaigns.UpdateCampaign(rq.ctx, &campaignsv1.UpdateCampaignRequest{Campaign: next,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: mask}})
	if err != nil {
		if rq.formRefused(err, &f) {
			return
		}
		rq.fail(err)
		return
	}
	rq.done(Prefix+"campaigns/"+url.PathEscape(id), "Campaign saved.")
}

// transitionCampaign makes a state transition with the etag the page was rendered with: if
// anyone changed the campaign since, the service answers ABORTED and the user sees the
// conflict page instead of acting on a state they did not see.
func (c *Console) transitionCampaign(rq *request, a campaignAction) {
	id, etag, ok := c.campaignChange(rq)
	if !ok {
		return
	}
	var err error
	cs := c.api.Campaigns
	switch a.Name {
	case "schedule":
		_, err = cs.ScheduleCampaign(rq.ctx, &campaignsv1.ScheduleCampaignRequest{Id: id, Etag: etag})
	case "activate":
		_, err = cs.ActivateCampaign(rq.ctx, &campaignsv1.ActivateCampaignRequest{Id: id, Etag: etag})
	case "pause":
		_, err = cs.PauseCampaign(rq.ctx, &campaignsv1.PauseCampaignRequest{Id: id, Etag: etag})
	case "resume":
		_, err = cs.ResumeCampaign(rq.ctx, &campaignsv1.ResumeCampaignRequest{Id: id, Etag: etag})
	case "complete":
		_, err = cs.CompleteCampaign(rq.ctx, &campaignsv1.CompleteCampaignRequest{Id: id, Etag: etag})
	case "cancel":
		_, err = cs.CancelCampaign(rq.ctx, &campaignsv1.CancelCampaignRequest{Id: id, Etag: etag})
	case "archive":
		_, err = cs.ArchiveCampaign(rq.ctx, &campaignsv1.ArchiveCampaignRequest{Id: id, Etag: etag})
	}
	if err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"campaigns/"+url.PathEscape(id), transitionDone[a.Name])
}

// writableCampaign is the {id} of the address when the caller may change campaigns and the
// service is there; false after an answer (404, 403 or no service) has been written.
func (c *Console) writableCampaign(rq *request) (string, bool) {
	id, ok := campaignID(rq)
	if !ok || !rq.need("campaigns.write") {
		return "", false
	}
	if c.api.Campaigns == nil {
		rq.fail(errNoService)
		return "", false
	}
	return id, true
}

// campaignChange reads what a campaign action needs — the campaign's id and the version
// (etag) its form was rendered with — after checking the caller may change campaigns; false
// after an answer (404, 403, 400 or no service) has been written.
func (c *Console) campaignChange(rq *request) (id, etag string, ok bool) {
	if id, ok = c.writableCampaign(rq); !ok {
		return "", "", false
	}
	etag = rq.r.PostFormValue("etag")
	if len(etag) > 128 {
		rq.renderError(http.StatusBadRequest, "The campaign's version in this form is not valid. Open the campaign again.")
		return "", "", false
	}
	return id, etag, true
}

var transitionDone = map[string]string{
	"schedule": "Campaign scheduled.", "activate": "Campaign activated.", "pause": "Campaign paused.",
	"resume": "Campaign resumed.", "complete": "Campaign completed.", "cancel": "Campaign cancelled.",
	"archive": "Campaign archived.",
}

func (c *Console) deleteCampaign(rq *request) {
	id, etag, ok := c.campaignChange(rq)
	if !ok {
		return
	}
	if _, err := c.api.Campaigns.DeleteCampaign(rq.ctx, &campaignsv1.DeleteCampaignRequest{Id: id, Etag: etag}); err != nil {
		rq.fail(err)
		return
	}
	rq.done(Prefix+"campaigns", "Draft deleted.")
}
