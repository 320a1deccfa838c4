package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// campaignDefinitionDetails explains the flags that define a campaign.
const campaignDefinitionDetails = `Schedule: -start and -end are wall-clock times in the -tz time zone, YYYY-MM-DDTHH:MM[:SS]
without an offset ("9:00 in New York" stays 9:00 across daylight-saving changes).
Money (-budget, -daily-budget) is in units of -currency with up to 6 decimals, e.g. 1500.50.
-variants takes name=weight pairs whose weights sum to 100 (a=50,b=50); -tags a comma list;
-labels key=value pairs (team=growth,region=eu).`

// transitionCommand is a state-transition subcommand.
type transitionCommand struct {
	name, summary, details string
	call                   func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error)
}

var transitionCommands = []transitionCommand{
	{"schedule", "schedule a draft: the scheduler starts it at its start time",
		"The campaign needs a start, a time zone and a budget. A start in the past starts it at once.",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.ScheduleCampaign(ctx, &campaignsv1.ScheduleCampaignRequest{Id: id, Etag: etag})
		}},
	{"activate", "start a scheduled campaign now, before its start time", "",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.ActivateCampaign(ctx, &campaignsv1.ActivateCampaignRequest{Id: id, Etag: etag})
		}},
	{"pause", "pause an active or budget-exhausted campaign", "",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.PauseCampaign(ctx, &campaignsv1.PauseCampaignRequest{Id: id, Etag: etag})
		}},
	{"resume", "make a paused campaign active again", "",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.ResumeCampaign(ctx, &campaignsv1.ResumeCampaignRequest{Id: id, Etag: etag})
		}},
	{"complete", "end a running campaign now, before its end time", "",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.CompleteCampaign(ctx, &campaignsv1.CompleteCampaignRequest{Id: id, Etag: etag})
		}},
	{"cancel", "stop a scheduled or running campaign for good", "",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.CancelCampaign(ctx, &campaignsv1.CancelCampaignRequest{Id: id, Etag: etag})
		}},
	{"archive", "archive a draft, completed or cancelled campaign (read-only afterwards)", "",
		func(ctx context.Context, c campaignsv1.CampaignServiceClient, id, etag string) (*campaignsv1.Campaign, error) {
			return c.ArchiveCampaign(ctx, &campaignsv1.ArchiveCampaignRequest{Id: id, Etag: etag})
		}},
}

var campaignCommands = append([]*command{
	{
		name:    "list",
		summary: "list the campaigns of your tenant",
		details: `Filters combine: -state and -channel take comma lists; -from/-to keep the campaigns whose
schedule overlaps that range (RFC 3339 times). -order is create_time (default, oldest
first), "create_time desc", name or "name desc".`,
		run: runCampaignsList,
	},
	{name: "get", args: "ID", summary: "show one campaign", run: runCampaignsGet},
	{
		name:    "create",
		summary: "create a draft campaign",
		details: `-name and -channel are required unless -f gives them. -f reads a Campaign as JSON (the
API's format); flags override its fields.

` + campaignDefinitionDetails,
		run: runCampaignsCreate,
	},
	{
		name:    "update",
		args:    "ID",
		summary: "change fields of a campaign",
		details: `Only the flags given change; an empty value clears a field (-end "", -daily-budget 0,
-variants ""). Which fields may change depends on the campaign's state (e.g. not the
currency once it runs). -etag makes the change only if nobody changed the campaign since.

` + campaignDefinitionDetails,
		run: runCampaignsUpdate,
	},
	{
		name:    "delete",
		args:    "ID",
		summary: "delete a draft",
		details: "Only drafts can be deleted; cancel or complete other campaigns, then archive them.",
		run:     runCampaignsDelete,
	},
}, append(transitionSubcommands(), []*command{
	{name: "transitions", args: "ID", summary: "list a campaign's state changes, oldest first", run: runCampaignsTransitions},
	{
		name:    "pacing",
		args:    "ID",
		summary: "show a campaign's spend against its budgets and what its pacing allows",
		details: `Spend comes from the analytics service: the value of the campaign's impression and click
events. Days run from midnight to midnight in the campaign's time zone.`,
		run: runCampaignsPacing,
	},
}...)...)

func transitionSubcommands() []*command {
	out := make([]*command, len(transitionCommands))
	for i, tc := range transitionCommands {
		out[i] = &command{name: tc.name, args: "ID", summary: tc.summary, details: tc.details,
			run: func(ctx context.Context, a *app, c *cmdline) error {
				var etag string
				c.StringVar(&etag, "etag", "", "only if the campaign still has this `etag` (from get)")
				args, err := c.parse(a)
				if err != nil {
					return err
				}
				return callCampaigns(ctx, a, writeCampaign, func(ctx context.Context, client campaignsv1.CampaignServiceClient) (*campaignsv1.Campaign, error) {
					return tc.call(ctx, client, args[0], etag)
				})
			}}
	}
	return out
}

// campaigns returns the CampaignService client on the gateway connection, and ctx with the
// caller's access token, renewed first if needed.
func (a *app) campaigns(ctx context.Context) (context.Context, campaignsv1.CampaignServiceClient, error) {
	return serviceClient(ctx, a, campaignsv1.NewCampaignServiceClient)
}

// callCampaigns makes one CampaignService call within -timeout and prints its result.
func callCampaigns[M proto.Message](ctx context.Context, a *app, table func(io.Writer, M) error, call func(context.Context, campaignsv1.CampaignServiceClient) (M, error)) error {
	return callService(ctx, a, campaignsv1.NewCampaignServiceClient, table, call)
}

// campaignFlags are the flags that define a campaign, and the update_mask path of each.
type campaignFlags struct {
	name, description, channel, start, end, tz string
	budget, dailyBudget, currency, pacing      string
	goal, variants, tags, labels               string
}

var campaignFlagPaths = map[string]string{
	"name": "name", "description": "description", "channel": "channel", "start": "schedule.start", "end": "schedule.end",
	"tz": "schedule.time_zone", "budget": "budget.total_micros", "daily-budget": "budget.daily_micros",
	"currency": "budget.currency_code", "pacing": "budget.pacing", "goal": "goal.conversion_event",
	"variants": "variants", "tags": "tags", "labels": "labels",
}

func (f *campaignFlags) register(c *cmdline) {
	c.StringVar(&f.name, "name", "", "campaign `name`, 1-200 characters")
	c.StringVar(&f.description, "description", "", "free `text`")
	c.StringVar(&f.channel, "channel", "", "`channel`: "+strings.Join(slices.Sorted(maps.Keys(channels)), ", "))
	c.StringVar(&f.start, "start", "", "start, a wall-clock `time` in -tz: 2026-03-08T09:00")
	c.StringVar(&f.end, "end", "", "end, a wall-clock `time` in -tz (optional)")
	c.StringVar(&f.tz, "tz", "", "IANA time `zone` of the schedule, e.g. America/New_York")
	c.StringVar(&f.budget, "budget", "", "total budget in currency `units`, e.g. 5000")
	c.StringVar(&f.dailyBudget, "daily-budget", "", "budget per day in currency `units` (0: none)")
	c.StringVar(&f.currency, "currency", "", "ISO 4217 `code` of the budget, e.g. EUR")
	c.StringVar(&f.pacing, "pacing", "", "`pacing`: asap or even")
	c.StringVar(&f.goal, "goal", "", "conversion `event` name that counts as success")
	c.StringVar(&f.variants, "variants", "", "A/B `variants` as name=weight pairs summing to 100: a=50,b=50")
	c.StringVar(&f.tags, "tags", "", "comma-separated `tags`")
	c.StringVar(&f.labels, "labels", "", "comma-separated key=value `labels`")
}

var channels = map[string]campaignsv1.Channel{
	"email": campaignsv1.Channel_CHANNEL_EMAIL, "sms": campaignsv1.Channel_CHANNEL_SMS, "push": campaignsv1.Channel_CHANNEL_PUSH,
	"web": campaignsv1.Channel_CHANNEL_WEB, "display": campaignsv1.Channel_CHANNEL_DISPLAY, "social": campaignsv1.Channel_CHANNEL_SOCIAL,
}

var pacings = map[string]campaignsv1.Budget_Pacing{"asap": campaignsv1.Budget_PACING_ASAP, "even": campaignsv1.Budget_PACING_EVEN}

var campaignStates = map[string]campaignsv1.Campaign_State{}

func init() {
	for name, v := range campaignsv1.Campaign_State_value {
		if v != 0 {
			campaignStates[strings.ToLower(strings.TrimPrefix(name, "STATE_"))] = campaignsv1.Campaign_State(v)
		}
	}
}

// apply sets on p the fields of the flags given on the command line and returns their
// update_mask paths, in flag order.
func (f *campaignFlags) apply(c *cmdline, p *campaignsv1.Campaign) ([]string, error) {
	var paths []string
	var errs []error
	set := map[string]bool{}
	c.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	schedule := func() *campaignsv1.Schedule {
		if p.Schedule == nil {
			p.Schedule = &campaignsv1.Schedule{}
		}
		return p.Schedule
	}
	budget := func() *campaignsv1.Budget {
		if p.Budget == nil {
			p.Budget = &campaignsv1.Budget{}
		}
		return p.Budget
	}
	for _, name := range slices.Sorted(maps.Keys(campaignFlagPaths)) {
		if !set[name] {
			continue
		}
		paths = append(paths, campaignFlagPaths[name])
		var err error
		switch name {
		case "name":
			p.Name = f.name
		case "description":
			p.Description = f.description
		case "channel":
			p.Channel, err = lookupName("channel", f.channel, channels)
		case "start":
			schedule().Start = f.start
		case "end":
			schedule().End = f.end
		case "tz":
			schedule().TimeZone = f.tz
		case "budget":
			budget().TotalMicros, err = parseMicros("budget", f.budget)
		case "daily-budget":
			var daily int64
			if daily, err = parseMicros("daily-budget", f.dailyBudget); daily > 0 {
				budget().DailyMicros = &daily
			} else {
				budget().DailyMicros = nil
			}
		case "currency":
			budget().CurrencyCode = strings.ToUpper(f.currency)
		case "pacing":
			budget().Pacing, err = lookupName("pacing", f.pacing, pacings)
		case "goal":
			p.Goal = &campaignsv1.Goal{ConversionEvent: f.goal}
		case "variants":
			p.Variants, err = parseVariants(f.variants)
		case "tags":
			p.Tags = splitList(f.tags)
		case "labels":
			p.Labels, err = parseLabels(f.labels)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return paths, errors.Join(errs...)
}

var moneyPattern = regexp.MustCompile(`^(\d{1,12})(?:\.(\d{1,6}))?$`)

// parseMicros turns an amount in currency units ("1500.5") into micros, exactly.
func parseMicros(flagName, s string) (int64, error) {
	m := moneyPattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("-%s %q: want an amount in currency units with up to 6 decimals, e.g. 1500.50", flagName, s)
	}
	units, _ := strconv.ParseInt(m[1], 10, 64)
	frac, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
	return units*1_000_000 + frac, nil
}

func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func parseVariants(s string) ([]*campaignsv1.Variant, error) {
	var out []*campaignsv1.Variant
	for _, item := range splitList(s) {
		name, weight, ok := strings.Cut(item, "=")
		w, err := strconv.ParseInt(strings.TrimSpace(weight), 10, 32)
		if !ok || err != nil || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("-variants %q: want name=weight pairs such as a=50,b=50", s)
		}
		out = append(out, &campaignsv1.Variant{Name: strings.TrimSpace(name), Weight: int32(w)})
	}
	return out, nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range splitList(s) {
		k, v, ok := strings.Cut(item, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("-labels %q: want key=value pairs such as team=growth", s)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

func runCampaignsCreate(ctx context.Context, a *app, c *cmdline) error {
	var (
		f    campaignFlags
		file string
		rid  requestIDFlag
	)
	f.register(c)
	c.StringVar(&file, "f", "", "read the campaign from this JSON `file` (- for stdin)")
	rid.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	p := &campaignsv1.Campaign{}
	if file != "" {
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(io.LimitReader(a.stdin, 1<<20))
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return fmt.Errorf("read campaign: %w", err)
		}
		if err := protojson.Unmarshal(data, p); err != nil {
			return c.usageErr(fmt.Sprintf("-f %s: not a Campaign in JSON: %v", file, err))
		}
	}
	if _, err := f.apply(c, p); err != nil {
		return c.usageErr(err.Error())
	}
	if p.GetName() == "" || p.GetChannel() == campaignsv1.Channel_CHANNEL_UNSPECIFIED {
		return c.usageErr("-name and -channel are required")
	}
	if err := rid.resolve(c); err != nil {
		return err
	}
	return callCampaigns(ctx, a, writeCampaign, func(ctx context.Context, client campaignsv1.CampaignServiceClient) (*campaignsv1.Campaign, error) {
		return client.CreateCampaign(ctx, &campaignsv1.CreateCampaignRequest{Campaign: p, RequestId: rid.sending(a)})
	})
}

func runCampaignsUpdate(ctx context.Context, a *app, c *cmdline) error {
	var (
		f    campaignFlags
		etag string
	)
	f.register(c)
	c.StringVar(&etag, "etag", "", "only if the campaign still has this `etag` (from get)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	p := &campaignsv1.Campaign{Id: args[0], Etag: etag}
	paths, err := f.apply(c, p)
	if err != nil {
		return c.usageErr(err.Error())
	}
	if len(paths) == 0 {
		return c.usageErr("campaigns update: give at least one field to change")
	}
	return callCampaigns(ctx, a, writeCampaign, func(ctx context.Context, client campaignsv1.CampaignServiceClient) (*campaignsv1.Campaign, error) {
		return client.UpdateCampaign(ctx, &campaignsv1.UpdateCampaignRequest{Campaign: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	})
}

func runCampaignsGet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callCampaigns(ctx, a, writeCampaign, func(ctx context.Context, client campaignsv1.CampaignServiceClient) (*campaignsv1.Campaign, error) {
		return client.GetCampaign(ctx, &campaignsv1.GetCampaignRequest{Id: args[0]})
	})
}

func runCampaignsDelete(ctx context.Context, a *app, c *cmdline) error {
	var etag string
	c.StringVar(&etag, "etag", "", "only if the campaign still has this `etag` (from get)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callCampaigns(ctx, a, func(w io.Writer, _ *emptypb.Empty) error {
		_, err := fmt.Fprintf(w, "deleted campaign %s\n", cell(args[0]))
		return err
	}, func(ctx context.Context, client campaignsv1.CampaignServiceClient) (*emptypb.Empty, error) {
		return client.DeleteCampaign(ctx, &campaignsv1.DeleteCampaignRequest{Id: args[0], Etag: etag})
	})
}

func runCampaignsList(ctx context.Context, a *app, c *cmdline) error {
	var (
		l                                   listFlags
		states, chans, tag, prefix, orderBy string
		from, to                            string
	)
	l.register(c)
	c.StringVar(&states, "state", "", "only these `states` (comma list): "+strings.Join(slices.Sorted(maps.Keys(campaignStates)), ", "))
	c.StringVar(&chans, "channel", "", "only these `channels` (comma list)")
	c.StringVar(&tag, "tag", "", "only campaigns with this `tag`")
	c.StringVar(&prefix, "name-prefix", "", "only campaigns whose name starts with this `text` (any case)")
	c.StringVar(&from, "from", "", "only campaigns whose schedule runs after this RFC 3339 `time`")
	c.StringVar(&to, "to", "", "only campaigns whose schedule starts before this RFC 3339 `time`")
	c.StringVar(&orderBy, "order", "", "`order`: create_time, \"create_time desc\", name or \"name desc\"")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if err := l.check(c); err != nil {
		return err
	}
	req := &campaignsv1.ListCampaignsRequest{Tag: tag, NamePrefix: prefix, OrderBy: orderBy}
	for _, s := range splitList(states) {
		st, err := lookupName("state", s, campaignStates)
		if err != nil {
			return c.usageErr(err.Error())
		}
		req.States = append(req.States, st)
	}
	for _, s := range splitList(chans) {
		ch, err := lookupName("channel", s, channels)
		if err != nil {
			return c.usageErr(err.Error())
		}
		req.Channels = append(req.Channels, ch)
	}
	for name, v := range map[string]string{"from": from, "to": to} {
		if v == "" {
			continue
		}
		t, err := parseTimeFlag(name, v)
		if err != nil {
			return c.usageErr(err.Error())
		}
		if name == "from" {
			req.WindowStartTime = timestamppb.New(t)
		} else {
			req.WindowEndTime = timestamppb.New(t)
		}
	}
	ctx, client, err := a.campaigns(ctx)
	if err != nil {
		return err
	}
	items, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]*campaignsv1.Campaign, string, error) {
		r := proto.Clone(req).(*campaignsv1.ListCampaignsRequest)
		r.PageSize, r.PageToken = int32(l.pageSize), token
		resp, err := client.ListCampaigns(ctx, r)
		return resp.GetCampaigns(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	if err := a.emit(&campaignsv1.ListCampaignsResponse{Campaigns: items, NextPageToken: next}, func(w io.Writer) error { return writeCampaigns(w, items) }); err != nil {
		return err
	}
	a.notePage(next)
	return nil
}

func runCampaignsTransitions(ctx context.Context, a *app, c *cmdline) error {
	var l listFlags
	l.register(c)
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	if err := l.check(c); err != nil {
		return err
	}
	ctx, client, err := a.campaigns(ctx)
	if err != nil {
		return err
	}
	items, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]*campaignsv1.CampaignTransition, string, error) {
		resp, err := client.ListCampaignTransitions(ctx, &campaignsv1.ListCampaignTransitionsRequest{Id: args[0], PageSize: int32(l.pageSize), PageToken: token})
		return resp.GetTransitions(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	if err := a.emit(&campaignsv1.ListCampaignTransitionsResponse{Transitions: items, NextPageToken: next}, func(w io.Writer) error { return writeTransitions(w, items) }); err != nil {
		return err
	}
	a.notePage(next)
	return nil
}

func runCampaignsPacing(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callCampaigns(ctx, a, writePacing, func(ctx context.Context, client campaignsv1.CampaignServiceClient) (*campaignsv1.CampaignPacing, error) {
		return client.GetCampaignPacing(ctx, &campaignsv1.GetCampaignPacingRequest{Id: args[0]})
	})
}

// ---- output ----

func enumName(v fmt.Stringer, prefix string) string {
	s := v.String()
	if strings.HasSuffix(s, "_UNSPECIFIED") {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func money(micros int64, currency string) string {
	return formatMoney(&analyticsv1.Money{AmountMicros: micros, Currency: currency})
}

// formatBudget shows a budget on one line: "5000.00 USD, 100.00/day, even".
func formatBudget(b *campaignsv1.Budget) string {
	if b == nil {
		return "-"
	}
	s := money(b.GetTotalMicros(), b.GetCurrencyCode())
	if b.DailyMicros != nil {
		s += ", " + money(b.GetDailyMicros(), "") + "/day"
	}
	return s + ", " + enumName(b.GetPacing(), "PACING_")
}

// shortWall shows a wall-clock time without zero seconds.
func shortWall(s string) string {
	if s == "" {
		return "…"
	}
	return strings.TrimSuffix(s, ":00")
}

// formatSchedule shows a schedule on one line: "2026-03-08T09:00 → 2026-11-01T01:30 America/New_York".
func formatSchedule(s *campaignsv1.Schedule) string {
	if s == nil || (s.GetStart() == "" && s.GetEnd() == "") {
		return "-"
	}
	return shortWall(s.GetStart()) + " → " + shortWall(s.GetEnd()) + " " + s.GetTimeZone()
}

func formatState(c *campaignsv1.Campaign) string {
	s := enumName(c.GetState(), "STATE_")
	if c.GetExhaustedBudget() != campaignsv1.ExhaustedBudget_EXHAUSTED_BUDGET_UNSPECIFIED {
		s += " (" + enumName(c.GetExhaustedBudget(), "EXHAUSTED_BUDGET_")
		if c.GetResumeTime() != nil {
			s += ", resumes " + formatTimestamp(c.GetResumeTime())
		}
		s += ")"
	}
	return s
}

func writeCampaigns(w io.Writer, cs []*campaignsv1.Campaign) error {
	t := newTable(w, "ID", "NAME", "CHANNEL", "STATE", "SCHEDULE", "BUDGET", "TAGS")
	for _, c := range cs {
		t.row(c.GetId(), c.GetName(), enumName(c.GetChannel(), "CHANNEL_"), formatState(c), formatSchedule(c.GetSchedule()),
			formatBudget(c.GetBudget()), strings.Join(c.GetTags(), ","))
	}
	return t.flush()
}

// writeCampaign shows one campaign field by field.
func writeCampaign(w io.Writer, c *campaignsv1.Campaign) error {
	t := newTable(w)
	t.row("ID", c.GetId())
	t.row("NAME", c.GetName())
	if c.GetDescription() != "" {
		t.row("DESCRIPTION", c.GetDescription())
	}
	t.row("CHANNEL", enumName(c.GetChannel(), "CHANNEL_"))
	t.row("STATE", formatState(c)+" since "+formatTimestamp(c.GetStateTime()))
	s := c.GetSchedule()
	if s.GetStart() != "" {
		t.row("START", shortWall(s.GetStart())+" "+s.GetTimeZone()+" ("+formatTimestamp(s.GetStartTime())+")")
	} else {
		t.row("START", "-")
	}
	if s.GetEnd() != "" {
		t.row("END", shortWall(s.GetEnd())+" "+s.GetTimeZone()+" ("+formatTimestamp(s.GetEndTime())+")")
	} else {
		t.row("END", "-")
	}
	t.row("BUDGET", formatBudget(c.GetBudget()))
	goal := c.GetGoal().GetConversionEvent()
	if goal == "" {
		goal = "-"
	}
	t.row("GOAL", goal)
	var variants []string
	for _, v := range c.GetVariants() {
		variants = append(variants, fmt.Sprintf("%s=%d", v.GetName(), v.GetWeight()))
	}
	t.row("VARIANTS", orDash(strings.Join(variants, ", ")))
	t.row("TAGS", orDash(strings.Join(c.GetTags(), ", ")))
	var labels []string
	for _, k := range slices.Sorted(maps.Keys(c.GetLabels())) {
		labels = append(labels, k+"="+c.GetLabels()[k])
	}
	t.row("LABELS", orDash(strings.Join(labels, ", ")))
	t.row("CREATOR", c.GetCreator())
	t.row("CREATED", formatTimestamp(c.GetCreateTime()))
	t.row("UPDATED", formatTimestamp(c.GetUpdateTime()))
	t.row("ETAG", c.GetEtag())
	return t.flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeTransitions(w io.Writer, ts []*campaignsv1.CampaignTransition) error {
	t := newTable(w, "EFFECTIVE", "FROM", "TO", "TRIGGER", "ACTOR", "RECORDED")
	for _, x := range ts {
		t.row(formatTimestamp(x.GetEffectiveTime()), enumName(x.GetFromState(), "STATE_"), enumName(x.GetToState(), "STATE_"),
			x.GetTrigger(), x.GetActor(), formatTimestamp(x.GetRecordTime()))
	}
	return t.flush()
}

func writePacing(w io.Writer, p *campaignsv1.CampaignPacing) error {
	cur := p.GetCurrencyCode()
	t := newTable(w)
	t.row("CAMPAIGN", p.GetCampaignId())
	t.row("STATE", enumName(p.GetState(), "STATE_"))
	t.row("AS OF", formatTimestamp(p.GetAsOfTime()))
	t.row("PACING", enumName(p.GetPacing(), "PACING_"))
	t.row("TOTAL", money(p.GetTotalSpendMicros(), cur)+" of "+money(p.GetTotalBudgetMicros(), cur))
	t.row("TODAY", formatTimestamp(p.GetDayStartTime())+" – "+formatTimestamp(p.GetDayEndTime())+
		" ("+strconv.FormatFloat(p.GetDayFraction()*100, 'f', 1, 64)+"% elapsed)")
	t.row("SPENT TODAY", money(p.GetSpendTodayMicros(), cur))
	t.row("ALLOWANCE", money(p.GetDailyAllowanceMicros(), cur)+" today")
	t.row("ALLOWED NOW", money(p.GetAllowedSpendMicros(), cur))
	onPace := "yes"
	if !p.GetOnPace() {
		onPace = "no: ahead of pace"
	}
	t.row("ON PACE", onPace)
	return t.flush()
}
