// Package billing is the billing service's domain: the usage of every tenant per day and
// meter, recomputed from the sources of truth; plans with their quotas; and the reporting of
// usage to Stripe, its webhooks and the reconciliation of both.
package billing

// Meter names one kind of usage. The names are stable: they key the usage table, the plans'
// limits, the QUOTAS bucket and (prefixed) Stripe's meter event names.
type Meter string

// The meters.
const (
	// EventsAccepted counts the events ingest acknowledged (stored by JetStream), per day of
	// receipt: each stream batch once, whatever the redeliveries.
	EventsAccepted Meter = "events_accepted"
	// EventsStored counts the events in the analytics store per day of receipt, after the
	// writer's deduplication (ClickHouse).
	EventsStored Meter = "events_stored"
	// MessagesEmail and MessagesSMS count the messages delivery sent per channel, per day of
	// sending (the send ledger).
	MessagesEmail Meter = "messages_email"
	MessagesSMS   Meter = "messages_sms"
	// ContactsStored is a gauge: the tenant's contacts, as last measured on the day.
	ContactsStored Meter = "contacts_stored"
	// AnalyticsQueries counts the analytics queries run, per day (recorded durably by analytics
	// before it answers).
	AnalyticsQueries Meter = "analytics_queries"
	// StorageBytes is a gauge: an estimate of the bytes the tenant's events take in the
	// analytics store, as last measured on the day.
	StorageBytes Meter = "storage_bytes"
)

// Meters lists every meter in the order reports show them.
func Meters() []Meter {
	return []Meter{EventsAccepted, EventsStored, MessagesEmail, MessagesSMS, ContactsStored, AnalyticsQueries, StorageBytes}
}

// Valid reports whether m is a known meter.
func (m Meter) Valid() bool {
	for _, k := range Meters() {
		if k == m {
			return true
		}
	}
	return false
}

// Gauge reports whether the meter measures a level (its day's value is the last measurement)
// rather than counting units (its day's value is the units of that day).
func (m Meter) Gauge() bool { return m == ContactsStored || m == StorageBytes }
