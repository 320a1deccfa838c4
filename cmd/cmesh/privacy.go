package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
)

// privacyPermissionDetails says who may run the privacy commands.
const privacyPermissionDetails = `Needs the privacy.manage permission (roles privacy_officer and admin).`

var privacyCommands = []*command{
	{name: "policy", summary: "read and change your tenant's privacy policy", subs: privacyPolicyCommands},
}

var privacyPolicyCommands = []*command{
	{
		name:    "get",
		summary: "show your tenant's privacy policy",
		details: privacyPermissionDetails,
		run:     runPrivacyPolicyGet,
	},
	{
		name:    "set",
		summary: "change your tenant's privacy policy",
		details: `Only the flags given change. -hash, -drop and -keep take comma lists of top-level
event property keys and set the rule of each (other keys' rules stay); -default is the
action for keys without a rule. Hashed values are "h:" + HMAC-SHA-256 under a per-tenant
secret: equal values still group. -ip truncate keeps the network only (IPv4 /24, IPv6 /48).
-retention-days 0 keeps raw events forever; older events are deleted within a day.
ingest applies a change within 30 s; it does not rewrite events already stored.

The policy is read first and changed only if nobody changed it in between (etag); if
somebody did, nothing is changed: run the command again.

` + privacyPermissionDetails,
		run: runPrivacyPolicySet,
	},
}

var (
	propertyActions = enumNames[dsrv1.PrivacyPolicy_PropertyAction](dsrv1.PrivacyPolicy_PropertyAction_value, "PROPERTY_ACTION_")
	ipHandlings     = enumNames[dsrv1.PrivacyPolicy_IPHandling](dsrv1.PrivacyPolicy_IPHandling_value, "IP_HANDLING_")
	uaHandlings     = enumNames[dsrv1.PrivacyPolicy_UserAgentHandling](dsrv1.PrivacyPolicy_UserAgentHandling_value, "USER_AGENT_HANDLING_")
)

func runPrivacyPolicyGet(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callDsr(ctx, a, writePolicy, func(ctx context.Context, client dsrv1.DsrServiceClient) (*dsrv1.PrivacyPolicy, error) {
		return client.GetPrivacyPolicy(ctx, &dsrv1.GetPrivacyPolicyRequest{})
	})
}

// policyFlags are the flags of privacy policy set.
type policyFlags struct {
	retentionDays      int
	hash, drop, keep   string
	def, ip, userAgent string
}

func (f *policyFlags) register(c *cmdline) {
	c.IntVar(&f.retentionDays, "retention-days", 0, "delete raw events older than `days` (0: keep forever; at most 3650)")
	c.StringVar(&f.hash, "hash", "", "hash these property `keys` (comma list)")
	c.StringVar(&f.drop, "drop", "", "drop these property `keys` (comma list)")
	c.StringVar(&f.keep, "keep", "", "keep these property `keys` as sent (comma list)")
	c.StringVar(&f.def, "default", "", "`action` for keys without a rule: keep, hash or drop")
	c.StringVar(&f.ip, "ip", "", "client IP `handling`: keep, truncate or drop")
	c.StringVar(&f.userAgent, "user-agent", "", "user agent `handling`: keep or drop")
}

// apply changes p as the flags given say and returns the update_mask paths.
func (f *policyFlags) apply(c *cmdline, p *dsrv1.PrivacyPolicy) ([]string, error) {
	set := map[string]bool{}
	c.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var paths []string
	if set["retention-days"] {
		if f.retentionDays < 0 || f.retentionDays > 3650 {
			return nil, fmt.Errorf("-retention-days %d: want 0 to 3650", f.retentionDays)
		}
		p.RetentionDays = int32(f.retentionDays)
		paths = append(paths, "retention_days")
	}
	rules := map[string]dsrv1.PrivacyPolicy_PropertyAction{}
	for _, r := range p.GetPropertyRules() {
		rules[r.GetKey()] = r.GetAction()
	}
	given := map[string]string{} // key → the flag that set it
	for _, fl := range []struct {
		name, keys string
		action     dsrv1.PrivacyPolicy_PropertyAction
	}{{"hash", f.hash, dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH}, {"drop", f.drop, dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP}, {"keep", f.keep, dsrv1.PrivacyPolicy_PROPERTY_ACTION_KEEP}} {
		if !set[fl.name] {
			continue
		}
		keys := splitList(fl.keys)
		if len(keys) == 0 {
			return nil, fmt.Errorf("-%s: give property keys, e.g. email,phone", fl.name)
		}
		for _, k := range keys {
			if other, dup := given[k]; dup {
				return nil, fmt.Errorf("property %q is given to both -%s and -%s", k, other, fl.name)
			}
			given[k] = fl.name
			rules[k] = fl.action
		}
	}
	if len(given) > 0 {
		p.PropertyRules = nil
		for _, k := range slices.Sorted(maps.Keys(rules)) {
			p.PropertyRules = append(p.PropertyRules, &dsrv1.PrivacyPolicy_PropertyRule{Key: k, Action: rules[k]})
		}
		paths = append(paths, "property_rules")
	}
	var err error
	if set["default"] {
		if p.DefaultPropertyAction, err = lookupName("default", f.def, propertyActions); err != nil {
			return nil, err
		}
		paths = append(paths, "default_property_action")
	}
	if set["ip"] {
		if p.IpHandling, err = lookupName("ip", f.ip, ipHandlings); err != nil {
			return nil, err
		}
		paths = append(paths, "ip_handling")
	}
	if set["user-agent"] {
		if p.UserAgentHandling, err = lookupName("user-agent", f.userAgent, uaHandlings); err != nil {
			return nil, err
		}
		paths = append(paths, "user_agent_handling")
	}
	return paths, nil
}

func runPrivacyPolicySet(ctx context.Context, a *app, c *cmdline) error {
	var f policyFlags
	f.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	// The flags are checked on an empty policy first, so a mistake fails before any call.
	paths, err := f.apply(c, &dsrv1.PrivacyPolicy{})
	if err != nil {
		return c.usageErr(err.Error())
	}
	if len(paths) == 0 {
		return c.usageErr("privacy policy set: give at least one setting to change")
	}
	ctx, client, err := a.dsr(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	current, err := client.GetPrivacyPolicy(cctx, &dsrv1.GetPrivacyPolicyRequest{})
	if err != nil {
		return fmt.Errorf("read the policy: %w", err)
	}
	if _, err := f.apply(c, current); err != nil {
		return err
	}
	cctx, cancel = a.callContext(ctx)
	defer cancel()
	updated, err := client.UpdatePrivacyPolicy(cctx, &dsrv1.UpdatePrivacyPolicyRequest{
		Policy: current, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, Etag: current.GetEtag(),
	})
	if status.Code(err) == codes.Aborted {
		return fmt.Errorf("the policy was changed by someone else after it was read; nothing was changed, run the command again: %w", err)
	}
	if err != nil {
		return err
	}
	return a.emit(updated, func(w io.Writer) error { return writePolicy(w, updated) })
}

func writePolicy(w io.Writer, p *dsrv1.PrivacyPolicy) error {
	t := newTable(w)
	retention := "forever"
	if d := p.GetRetentionDays(); d > 0 {
		retention = strconv.Itoa(int(d)) + " days"
	}
	t.row("RETENTION", retention)
	def := p.GetDefaultPropertyAction()
	if def == dsrv1.PrivacyPolicy_PROPERTY_ACTION_UNSPECIFIED {
		def = dsrv1.PrivacyPolicy_PROPERTY_ACTION_KEEP
	}
	t.row("DEFAULT", enumName(def, "PROPERTY_ACTION_"))
	var rules []string
	for _, r := range p.GetPropertyRules() {
		rules = append(rules, r.GetKey()+"="+enumName(r.GetAction(), "PROPERTY_ACTION_"))
	}
	t.row("PROPERTIES", orDash(strings.Join(rules, ", ")))
	ip := p.GetIpHandling()
	if ip == dsrv1.PrivacyPolicy_IP_HANDLING_UNSPECIFIED {
		ip = dsrv1.PrivacyPolicy_IP_HANDLING_KEEP
	}
	t.row("IP", enumName(ip, "IP_HANDLING_"))
	ua := p.GetUserAgentHandling()
	if ua == dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_UNSPECIFIED {
		ua = dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_KEEP
	}
	t.row("USER AGENT", enumName(ua, "USER_AGENT_HANDLING_"))
	t.row("VERSION", strconv.FormatInt(p.GetVersion(), 10))
	t.row("UPDATED", formatTimestampOr(p.GetUpdateTime(), "never (the default policy)"))
	t.row("ETAG", p.GetEtag())
	return t.flush()
}
