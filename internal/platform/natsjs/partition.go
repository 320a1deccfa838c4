package natsjs

import (
	"strconv"
	"strings"

	"github.com/go-faster/city"
)

// Partitions is the number of partitions of the event stream. An event's partition is fixed by
// its tenant and subject (Partition), so one subject's events keep their order in one
// partition, are written by the writer owning it and stored on one ClickHouse shard. Changing it
// moves subjects between partitions: it is a constant of the stored data, not a setting.
const Partitions = 8

// Partition returns the partition of a tenant's subject (the user id, or the anonymous id when
// there is none): cityHash64 of tenant, a zero byte and subject, modulo Partitions — the same
// value ClickHouse computes as cityHash64(concat(tenant_id, '\0', subject)) % 8, which the
// analytics migrations use for rows stored before partitions existed.
func Partition(tenant, subject string) int {
	b := make([]byte, 0, len(tenant)+1+len(subject))
	b = append(append(append(b, tenant...), 0), subject...)
	return int(city.CH64(b) % Partitions)
}

// Subject is the subject of partition p of tenant's events: events.<tenant>.<p>.
func Subject(tenant string, p int) string {
	return SubjectPrefix + tenant + "." + strconv.Itoa(p)
}

// ParseSubject returns the tenant and partition a subject of the event stream names. A subject
// of the form before partitions, events.<tenant>, has no partition: part is -1 then.
func ParseSubject(subject string) (tenant string, part int, ok bool) {
	rest, found := strings.CutPrefix(subject, SubjectPrefix)
	if !found || rest == "" {
		return "", 0, false
	}
	tenant, p, partitioned := strings.Cut(rest, ".")
	if tenant == "" {
		return "", 0, false
	}
	if !partitioned {
		return tenant, -1, true
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n >= Partitions || strconv.Itoa(n) != p {
		return "", 0, false
	}
	return tenant, n, true
}
