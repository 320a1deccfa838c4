package clickhouse_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

func violatedFields(err error) []string {
	st, _ := apperr.ToStatus(err)
	var out []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField())
			}
		}
	}
	return out
}

// Go's zone database takes names ClickHouse 18.16 cannot load (every "right/" leap-second
// zone, found by trying each of Go's names against the real server) and names that are not
// IANA zones at all. Each is INVALID_ARGUMENT naming time_zone, never a 500.
func TestTimeZonesGoAcceptsButNotClickHouse(t *testing.T) {
	svc := load(t, dataset, 1)
	for _, tz := range []string{"right/UTC", "right/Europe/Berlin", "posix/Europe/Berlin", "Local", "localtime", "posixrules", "Europe/../UTC", "utc"} {
		_, err := svc.Series(context.Background(), "t1", analytics.SeriesRequest{Granularity: analytics.Day, TimeZone: tz})
		if f := violatedFields(err); code(err) != codes.InvalidArgument || len(f) != 1 || f[0] != "time_zone" {
			t.Errorf("time_zone %q: %v (fields %v); want INVALID_ARGUMENT on time_zone", tz, err, f)
		}
	}
	for _, tz := range []string{"UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata"} {
		if _, err := svc.Series(context.Background(), "t1", analytics.SeriesRequest{Granularity: analytics.Day, TimeZone: tz}); err != nil {
			t.Errorf("time_zone %q: %v", tz, err)
		}
	}
}

// The adapter's second line: a zone ClickHouse cannot load that reached it anyway.
func TestStoreMapsUnknownTimeZone(t *testing.T) {
	q := newQueries(t, open(t, dataset, 1), clickhouse.DefaultQueryLimits)
	loc, err := time.LoadLocation("right/UTC")
	if err != nil {
		t.Skip("no right/ zones in this machine's zone database")
	}
	end := at("2026-03-02T00:00:00Z")
	_, err = q.Aggregate(context.Background(), analytics.Query{TenantID: "t1", Start: end.Add(-24 * time.Hour), End: end,
		Dimension: analytics.Bucket, Granularity: analytics.Day, Location: loc})
	if f := violatedFields(err); code(err) != codes.InvalidArgument || len(f) != 1 || f[0] != "time_zone" {
		t.Fatalf("aggregate in right/UTC: %v (fields %v); want INVALID_ARGUMENT on time_zone", err, f)
	}
}
