package privacy

import (
	"net/netip"
)

// Action is what a policy does with an event property.
type Action string

// The property actions.
const (
	ActionKeep Action = "keep"
	ActionHash Action = "hash" // Hasher.ValueHash of the value (a non-string value is hashed as its JSON)
	ActionDrop Action = "drop"
)

// IPHandling is what a policy does with an event's client IP.
type IPHandling string

// The IP handlings.
const (
	IPKeep     IPHandling = "keep"
	IPTruncate IPHandling = "truncate" // IPv4 /24, IPv6 /48 (TruncateIP)
	IPDrop     IPHandling = "drop"
)

// UserAgentHandling is what a policy does with an event's user agent.
type UserAgentHandling string

// The user-agent handlings.
const (
	UserAgentKeep UserAgentHandling = "keep"
	UserAgentDrop UserAgentHandling = "drop"
)

// Policy is a tenant's privacy policy as dsr publishes it (policy.<tenant> in Bucket, JSON).
// The zero Policy is the default: keep everything forever.
type Policy struct {
	// Version rises with every update; a consumer ignores an older one.
	Version int64 `json:"version"`
	// RetentionDays: raw events older than this are deleted by analytics; 0 keeps them.
	RetentionDays int `json:"retention_days,omitempty"`
	// PropertyRules maps a top-level property key to its action.
	PropertyRules map[string]Action `json:"property_rules,omitempty"`
	// DefaultPropertyAction applies to keys without a rule ("" keeps them).
	DefaultPropertyAction Action `json:"default_property_action,omitempty"`
	// IP and UserAgent: "" keeps them.
	IP        IPHandling        `json:"ip,omitempty"`
	UserAgent UserAgentHandling `json:"user_agent,omitempty"`
}

// PropertyAction returns the action for a property key.
func (p Policy) PropertyAction(key string) Action {
	if a, ok := p.PropertyRules[key]; ok && a != "" {
		return a
	}
	if p.DefaultPropertyAction != "" {
		return p.DefaultPropertyAction
	}
	return ActionKeep
}

// TouchesEvents reports whether the policy changes events at ingest (property rules, IP or
// user agent), so ingest can skip the work for tenants whose policy keeps everything.
func (p Policy) TouchesEvents() bool {
	if p.IP != "" && p.IP != IPKeep || p.UserAgent != "" && p.UserAgent != UserAgentKeep {
		return true
	}
	if p.DefaultPropertyAction != "" && p.DefaultPropertyAction != ActionKeep {
		return true
	}
	for _, a := range p.PropertyRules {
		if a != ActionKeep {
			return true
		}
	}
	return false
}

// ApplyIP returns the address as the handling keeps it: unchanged, truncated, or "" (dropped).
// An address that does not parse is dropped unless the handling keeps addresses.
func ApplyIP(h IPHandling, ip string) string {
	switch h {
	case "", IPKeep:
		return ip
	case IPTruncate:
		return TruncateIP(ip)
	default:
		return ""
	}
}

// TruncateIP returns the network of an address: IPv4 /24 ("203.0.113.0"), IPv6 /48
// ("2001:db8:1::"); an IPv4-mapped IPv6 address is truncated as IPv4. "" when ip does not parse.
func TruncateIP(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return ""
	}
	return p.Addr().String()
}
