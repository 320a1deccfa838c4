package console

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
)

// Limits of the campaign form. The campaigns service enforces the same limits (see
// proto/campaignmesh/campaigns/v1/resources.proto); the console checks them first so that a
// mistake is answered in words with the form kept, instead of after a round trip.
const (
	campaignNameMax        = 200
	campaignDescriptionMax = 2000
	campaignGoalMax        = 200
	campaignZoneMax        = 64
	campaignVariantsMax    = 20
	campaignCurrencyLen    = 3
	// campaignBudgetUnitsMax is the largest budget in currency units (10^15 micros).
	campaignBudgetUnitsMax = 1_000_000_000
	campaignRequestIDMax   = 64
)

var (
	campaignIDPattern      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	campaignVariantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	campaignCurrency       = regexp.MustCompile(`^[A-Z]{3}$`)
	campaignMoneyPattern   = regexp.MustCompile(`^[0-9]{1,10}(\.[0-9]{1,6})?$`)
	campaignRequestID      = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// campaignChannels are the channels the form offers, in the order shown.
var campaignChannels = []campaignsv1.Channel{
	campaignsv1.Channel_CHANNEL_EMAIL, campaignsv1.Channel_CHANNEL_SMS, campaignsv1.Channel_CHANNEL_PUSH,
	campaignsv1.Channel_CHANNEL_WEB, campaignsv1.Channel_CHANNEL_DISPLAY, campaignsv1.Channel_CHANNEL_SOCIAL,
}

// variantInput is one variant line of the campaign form, as typed.
type variantInput struct {
	Name, Weight string
	// Index is the row's number on the form (1-based), for the labels "Variant 1 name".
	Index int
}

// campaignForm is the create/edit form as typed: what is shown again, with the problems,
// when it cannot be accepted.
type campaignForm struct {
	// ID and Etag are set when editing: the campaign and the version the form was opened on.
	ID, Etag string
	// State is the edited campaign's state (STATE_DRAFT for a new one): it decides which
	// fields may change.
	State campaignsv1.Campaign_State
	// RequestID makes a double submit of the create form create one campaign.
	RequestID string

	Name, Description, Channel           string
	Start, End, TimeZone                 string
	Total, Daily, Currency, Pacing, Goal string
	Variants                             []variantInput
	Problems                             []string
	Channels                             []campaignsv1.Channel
	Zones                                []string
	editing                              bool
}

// Editing reports whether the form changes an existing campaign.
func (f campaignForm) Editing() bool { return f.editing }

// Locked reports whether a field may not change in the campaign's state (the table on the
// Campaign message): the form shows it disabled, and a disabled field is not submitted, so it
// is never part of the update.
func (f campaignForm) Locked(field string) bool {
	return !campaignFieldChangeable(field, f.State)
}

// campaignFieldChangeable mirrors the service's table of which field may change in which
// state, for the form only: the service decides.
func campaignFieldChangeable(field string, s campaignsv1.Campaign_State) bool {
	const (
		draft     = campaignsv1.Campaign_STATE_DRAFT
		scheduled = campaignsv1.Campaign_STATE_SCHEDULED
		active    = campaignsv1.Campaign_STATE_ACTIVE
		paused    = campaignsv1.Campaign_STATE_PAUSED
		exhausted = campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED
		completed = campaignsv1.Campaign_STATE_COMPLETED
		cancelled = campaignsv1.Campaign_STATE_CANCELLED
	)
	var in []campaignsv1.Campaign_State
	switch field {
	case "name", "description":
		in = []campaignsv1.Campaign_State{draft, scheduled, active, paused, exhausted, completed, cancelled}
	case "channel":
		in = []campaignsv1.Campaign_State{draft}
	case "goal", "variants", "start", "time_zone", "currency":
		in = []campaignsv1.Campaign_State{draft, scheduled}
	case "end", "budget_total", "budget_daily", "pacing", "variant_weights":
		in = []campaignsv1.Campaign_State{draft, scheduled, active, paused, exhausted}
	}
	return slices.Contains(in, s)
}

// campaignFormKeys are the form's field names other than the variant rows.
var campaignFormKeys = []string{"name", "description", "channel", "start", "end", "time_zone",
	"budget_total", "budget_daily", "currency", "pacing", "goal"}

func variantKeys(i int) (name, weight string) {
	return "variant_name_" + strconv.Itoa(i), "variant_weight_" + strconv.Itoa(i)
}

// hasVariantKeys reports whether a submitted form carries variant rows (they are absent when
// the variants are locked, i.e. disabled on the form).
func hasVariantKeys(v url.Values) bool {
	for i := 1; i <= campaignVariantsMax; i++ {
		n, w := variantKeys(i)
		if _, ok := v[n]; ok {
			return true
		}
		if _, ok := v[w]; ok {
			return true
		}
	}
	return false
}

// campaignValues is a campaign as the form's fields.
func campaignValues(c *campaignsv1.Campaign) url.Values {
	v := url.Values{}
	v.Set("name", c.GetName())
	v.Set("description", c.GetDescription())
	if ch := c.GetChannel(); ch != campaignsv1.Channel_CHANNEL_UNSPECIFIED {
		v.Set("channel", enumName(ch.String(), "CHANNEL_"))
	}
	v.Set("start", formWallClock(c.GetSchedule().GetStart()))
	v.Set("end", formWallClock(c.GetSchedule().GetEnd()))
	v.Set("time_zone", c.GetSchedule().GetTimeZone())
	if b := c.GetBudget(); b != nil && b.GetTotalMicros() != 0 {
		v.Set("budget_total", microsText(b.GetTotalMicros()))
		if b.GetDailyMicros() != 0 {
			v.Set("budget_daily", microsText(b.GetDailyMicros()))
		}
		v.Set("currency", b.GetCurrencyCode())
		v.Set("pacing", "asap")
		if b.GetPacing() == campaignsv1.Budget_PACING_EVEN {
			v.Set("pacing", "even")
		}
	}
	v.Set("goal", c.GetGoal().GetConversionEvent())
	for i, x := range c.GetVariants() {
		n, w := variantKeys(i + 1)
		v.Set(n, x.GetName())
		v.Set(w, strconv.Itoa(int(x.GetWeight())))
	}
	return v
}

// formWallClock shows a schedule time as a datetime-local input expects it: without seconds
// when they are zero.
func formWallClock(s string) string {
	if len(s) == len("2006-01-02T15:04:05") && strings.HasSuffix(s, ":00") {
		return s[:len("2006-01-02T15:04")]
	}
	return s
}

// mergeCampaignValues is what an edit form means: the campaign's current values, overridden
// by the fields the form submitted (locked fields are disabled, hence not submitted).
func mergeCampaignValues(current, submitted url.Values) url.Values {
	out := url.Values{}
	for k, vs := range current {
		out[k] = slices.Clone(vs)
	}
	for _, k := range campaignFormKeys {
		if vs, ok := submitted[k]; ok {
			out[k] = slices.Clone(vs)
		}
	}
	if hasVariantKeys(submitted) {
		for i := 1; i <= campaignVariantsMax; i++ {
			n, w := variantKeys(i)
			out.Del(n)
			out.Del(w)
			if vs, ok := submitted[n]; ok {
				out[n] = slices.Clone(vs)
			}
			if vs, ok := submitted[w]; ok {
				out[w] = slices.Clone(vs)
			}
		}
	}
	return out
}

// parseCampaignForm reads the form into a campaign. Problems are sentences for people, one per
// field; the form echoes what was typed so nothing is lost.
func parseCampaignForm(v url.Values) (campaignForm, *campaignsv1.Campaign, []string) {
	f := campaignForm{
		Name:        strings.TrimSpace(v.Get("name")),
		Description: strings.ReplaceAll(strings.TrimSpace(v.Get("description")), "\r\n", "\n"),
		Channel:     strings.TrimSpace(v.Get("channel")),
		Start:       strings.TrimSpace(v.Get("start")),
		End:         strings.TrimSpace(v.Get("end")),
		TimeZone:    strings.TrimSpace(v.Get("time_zone")),
		Total:       strings.TrimSpace(v.Get("budget_total")),
		Daily:       strings.TrimSpace(v.Get("budget_daily")),
		Currency:    strings.ToUpper(strings.TrimSpace(v.Get("currency"))),
		Pacing:      strings.TrimSpace(v.Get("pacing")),
		Goal:        strings.TrimSpace(v.Get("goal")),
		RequestID:   strings.TrimSpace(v.Get("request_id")),
	}
	c := &campaignsv1.Campaign{Name: f.Name, Description: f.Description}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	checkText := func(label, s string, max int, required bool) {
		switch {
		case required && s == "":
			bad("%s: enter a %s.", label, strings.ToLower(label))
		case !utf8.ValidString(s) || utf8.RuneCountInString(s) > max:
			bad("%s: at most %s characters.", label, fmtNumber(max))
		case strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }):
			bad("%s: no control characters.", label)
		}
	}
	checkText("Name", f.Name, campaignNameMax, true)
	checkText("Description", f.Description, campaignDescriptionMax, false)
	if strings.Contains(f.Name, "\n") {
		bad("Name: one line only.")
	}

	if ch, ok := campaignChannelByName(f.Channel); ok {
		c.Channel = ch
	} else {
		bad("Channel: choose one of email, sms, push, web, display or social.")
	}

	// Schedule: wall-clock times in the chosen zone.
	var start, end time.Time
	var startOK, endOK bool
	if f.Start != "" {
		if start, startOK = parseWallClock(f.Start); !startOK {
			bad("Start: enter a date and time such as 2026-12-01T09:00.")
		}
	}
	if f.End != "" {
		if end, endOK = parseWallClock(f.End); !endOK {
			bad("End: enter a date and time such as 2026-12-31T18:00.")
		}
	}
	if startOK && endOK && !end.After(start) {
		bad("End: must be after the start.")
	}
	switch {
	case f.TimeZone == "" && (f.Start != "" || f.End != ""):
		bad("Time zone: enter the IANA time zone of the start and end, such as Europe/Berlin or UTC.")
	case f.TimeZone != "":
		if !validZone(f.TimeZone) {
			bad("Time zone: %q is not an IANA time zone name such as Europe/Berlin or UTC.", truncateText(f.TimeZone, campaignZoneMax))
		}
	}
	if f.Start != "" || f.End != "" || f.TimeZone != "" {
		c.Schedule = &campaignsv1.Schedule{TimeZone: f.TimeZone}
		if startOK {
			c.Schedule.Start = start.Format("2006-01-02T15:04:05")
		}
		if endOK {
			c.Schedule.End = end.Format("2006-01-02T15:04:05")
		}
	}

	// Budget: in currency units as typed, sent in micros.
	if f.Total != "" || f.Daily != "" {
		b := &campaignsv1.Budget{CurrencyCode: f.Currency, Pacing: campaignsv1.Budget_PACING_ASAP}
		total, ok := parseMicros(f.Total)
		switch {
		case f.Total == "":
			bad("Total budget: enter the total budget (the daily budget is optional).")
		case !ok || total < 1:
			bad("Total budget: enter an amount such as 1500 or 1500.50, more than 0 and at most %s.", fmtNumber(int64(campaignBudgetUnitsMax)))
		default:
			b.TotalMicros = total
		}
		if f.Daily != "" {
			daily, ok := parseMicros(f.Daily)
			switch {
			case !ok || daily < 1:
				bad("Daily budget: enter an amount such as 100 or 99.90, more than 0, or leave it empty.")
			case b.TotalMicros > 0 && daily > b.TotalMicros:
				bad("Daily budget: must not be more than the total budget.")
			default:
				b.DailyMicros = &daily
			}
		}
		if !campaignCurrency.MatchString(f.Currency) {
			bad("Currency: enter a three-letter ISO 4217 code such as EUR or USD.")
		}
		switch f.Pacing {
		case "", "asap":
		case "even":
			b.Pacing = campaignsv1.Budget_PACING_EVEN
		default:
			bad("Pacing: choose as fast as possible or even.")
		}
		c.Budget = b
	} else if f.Pacing != "" && f.Pacing != "asap" && f.Pacing != "even" {
		bad("Pacing: choose as fast as possible or even.")
	}

	checkText("Goal event", f.Goal, campaignGoalMax, false)
	if f.Goal != "" {
		c.Goal = &campaignsv1.Goal{ConversionEvent: f.Goal}
	}

	// Variants: rows left empty are ignored.
	seen := map[string]bool{}
	sum := 0
	for i := 1; i <= campaignVariantsMax; i++ {
		nk, wk := variantKeys(i)
		name, weight := strings.TrimSpace(v.Get(nk)), strings.TrimSpace(v.Get(wk))
		if name == "" && weight == "" {
			continue
		}
		f.Variants = append(f.Variants, variantInput{Name: name, Weight: weight})
		switch {
		case name == "":
			bad("Variant %d: enter a name (or clear its weight).", i)
			continue
		case !campaignVariantPattern.MatchString(name):
			bad("Variant %d name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.", i)
		case seen[name]:
			bad("Variant %d name: %q is used twice.", i, name)
		}
		seen[name] = true
		w, err := strconv.Atoi(weight)
		if err != nil || w < 0 || w > 100 {
			bad("Variant %d weight: enter a whole number from 0 to 100.", i)
			continue
		}
		sum += w
		c.Variants = append(c.Variants, &campaignsv1.Variant{Name: name, Weight: int32(w)})
	}
	if len(f.Variants) > 0 && len(c.Variants) == len(f.Variants) && sum != 100 {
		bad("Variants: the weights must add up to 100 (they add up to %d).", sum)
	}

	if f.RequestID != "" && !campaignRequestID.MatchString(f.RequestID) {
		f.RequestID = ""
	}
	f.Problems = problems
	return f, c, problems
}

// campaignChannelByName reads a channel as the form names it ("web").
func campaignChannelByName(name string) (campaignsv1.Channel, bool) {
	for _, ch := range campaignChannels {
		if enumName(ch.String(), "CHANNEL_") == name {
			return ch, true
		}
	}
	return campaignsv1.Channel_CHANNEL_UNSPECIFIED, false
}

// parseWallClock reads a datetime-local value ("2026-12-01T09:00", seconds optional) as a
// wall-clock time without a zone.
func parseWallClock(s string) (time.Time, bool) {
	s = strings.Replace(s, " ", "T", 1)
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil && t.Year() >= 1970 && t.Year() <= 9999 {
			return t, true
		}
	}
	return time.Time{}, false
}

// validZone reports whether name is an IANA time zone the server knows ("Local", the
// server's own zone, is not one).
func validZone(name string) bool {
	if name == "" || name == "Local" || len(name) > campaignZoneMax {
		return false
	}
	_, err := time.LoadLocation(name)
	return err == nil
}

// parseMicros reads an amount in currency units ("1500", "1500.5") as micros.
func parseMicros(s string) (int64, bool) {
	if !campaignMoneyPattern.MatchString(s) {
		return 0, false
	}
	units, frac, _ := strings.Cut(s, ".")
	u, err := strconv.ParseInt(units, 10, 64)
	if err != nil || u > campaignBudgetUnitsMax {
		return 0, false
	}
	frac += strings.Repeat("0", 6-len(frac))
	f, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return 0, false
	}
	m := u*1_000_000 + f
	if m > campaignBudgetUnitsMax*1_000_000 {
		return 0, false
	}
	return m, true
}

// microsText writes micros as currency units the way parseMicros reads them: "1500",
// "1500.5".
func microsText(m int64) string {
	s := strconv.FormatInt(m/1_000_000, 10)
	if frac := m % 1_000_000; frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	}
	return s
}

// campaignUpdateMask names the fields an edit changes: those the form submitted (locked
// fields are not submitted) whose value differs from the campaign's current one.
func campaignUpdateMask(submitted url.Values, cur, next *campaignsv1.Campaign) []string {
	var mask []string
	has := func(k string) bool { _, ok := submitted[k]; return ok }
	add := func(key, path string, changed bool) {
		if has(key) && changed {
			mask = append(mask, path)
		}
	}
	add("name", "name", cur.GetName() != next.GetName())
	add("description", "description", cur.GetDescription() != next.GetDescription())
	add("channel", "channel", cur.GetChannel() != next.GetChannel())
	add("start", "schedule.start", formWallClock(cur.GetSchedule().GetStart()) != formWallClock(next.GetSchedule().GetStart()))
	add("end", "schedule.end", formWallClock(cur.GetSchedule().GetEnd()) != formWallClock(next.GetSchedule().GetEnd()))
	add("time_zone", "schedule.time_zone", cur.GetSchedule().GetTimeZone() != next.GetSchedule().GetTimeZone())
	cb, nb := cur.GetBudget(), next.GetBudget()
	add("budget_total", "budget.total_micros", cb.GetTotalMicros() != nb.GetTotalMicros())
	add("budget_daily", "budget.daily_micros", cb.GetDailyMicros() != nb.GetDailyMicros())
	add("currency", "budget.currency_code", cb.GetCurrencyCode() != nb.GetCurrencyCode())
	add("pacing", "budget.pacing", normPacing(cb.GetPacing()) != normPacing(nb.GetPacing()))
	add("goal", "goal.conversion_event", cur.GetGoal().GetConversionEvent() != next.GetGoal().GetConversionEvent())
	if hasVariantKeys(submitted) && !sameVariants(cur.GetVariants(), next.GetVariants()) {
		mask = append(mask, "variants")
	}
	return mask
}

func normPacing(p campaignsv1.Budget_Pacing) campaignsv1.Budget_Pacing {
	if p == campaignsv1.Budget_PACING_UNSPECIFIED {
		return campaignsv1.Budget_PACING_ASAP
	}
	return p
}

func sameVariants(a, b []*campaignsv1.Variant) bool {
	return slices.EqualFunc(a, b, func(x, y *campaignsv1.Variant) bool {
		return x.GetName() == y.GetName() && x.GetWeight() == y.GetWeight()
	})
}

// formRows are the variant rows the form shows: those typed (or the campaign's), then empty
// ones to add more while the variants may change, at least two in all and at most 20.
func formRows(typed []variantInput, namesLocked bool) []variantInput {
	rows := slices.Clone(typed)
	if !namesLocked {
		want := min(campaignVariantsMax, max(2, len(rows)+2))
		for len(rows) < want {
			rows = append(rows, variantInput{})
		}
	}
	for i := range rows {
		rows[i].Index = i + 1
	}
	return rows
}
