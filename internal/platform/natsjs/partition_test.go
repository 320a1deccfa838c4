package natsjs

import "testing"

// The partitions ClickHouse 18.16 computes for these pairs with
// cityHash64(concat(tenant, '\0', subject)) % 8 (run on the dev server): the migrations of
// stored rows and the stream must agree.
func TestPartitionIsClickHousesCityHash(t *testing.T) {
	for _, c := range []struct {
		tenant, subject string
		want            int
	}{
		{"t1", "u1", 6}, {"t1", "", 0}, {"acme", "anon-7f3a", 4}, {"", "x", 7},
		{"tenant-0001", "user-000042", 5}, {"t2", "ünï", 2},
	} {
		if got := Partition(c.tenant, c.subject); got != c.want {
			t.Errorf("Partition(%q, %q) = %d, want %d", c.tenant, c.subject, got, c.want)
		}
	}
}

func TestParseSubject(t *testing.T) {
	for _, c := range []struct {
		subject, tenant string
		part            int
		ok              bool
	}{
		{"events.acme.3", "acme", 3, true},
		{Subject("acme", 7), "acme", 7, true},
		{"events.acme", "acme", -1, true},
		{"events.acme.8", "", 0, false},
		{"events.acme.03", "", 0, false},
		{"events.acme.x", "", 0, false},
		{"events.acme.1.2", "", 0, false},
		{"events.", "", 0, false},
		{"events..1", "", 0, false},
		{"other.acme.1", "", 0, false},
	} {
		tenant, part, ok := ParseSubject(c.subject)
		if ok != c.ok || (ok && (tenant != c.tenant || part != c.part)) {
			t.Errorf("ParseSubject(%q) = %q, %d, %v; want %q, %d, %v", c.subject, tenant, part, ok, c.tenant, c.part, c.ok)
		}
	}
}
