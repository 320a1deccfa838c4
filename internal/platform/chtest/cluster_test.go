package chtest

import (
	"context"
	"testing"
	"time"
)

// Two servers started as the two shards of a cluster: a Distributed table over it reads the
// rows of both (3 + 2), each server's own table only its own, and the reader (the user remote
// shards are read as) may read but not insert.
func TestClusterOfTwoShards(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, "cm_test", 2)
	t.Logf("2 servers answered after %s", time.Since(start).Round(time.Millisecond))
	if len(c.Addrs) != 2 || c.Addrs[0] == c.Addrs[1] {
		t.Fatalf("addresses %v, want two", c.Addrs)
	}
	db := c.NewDatabase(t)
	c.Exec(t, "CREATE TABLE "+db+".rows_local (shard UInt8, n UInt64) ENGINE = MergeTree ORDER BY n")
	c.Exec(t, "CREATE TABLE "+db+".rows AS "+db+".rows_local ENGINE = Distributed(cm_test, '"+db+"', rows_local, n)")
	ctx := context.Background()
	for i, rows := range []string{"SELECT 1, number + 1 FROM numbers(3)", "SELECT 2, number + 4 FROM numbers(2)"} {
		if err := c.Conn(t, i, db, c.Writer).Exec(ctx, "INSERT INTO rows_local "+rows); err != nil {
			t.Fatalf("insert into shard %d: %v", i+1, err)
		}
	}
	count := func(i int, table string) (n, sum uint64) {
		t.Helper()
		if err := c.Conn(t, i, db, c.Reader).QueryRow(ctx, "SELECT count(), sum(n) FROM "+table).Scan(&n, &sum); err != nil {
			t.Fatalf("shard %d, %s: %v", i+1, table, err)
		}
		return n, sum
	}
	for i := range c.Addrs {
		if n, sum := count(i, "rows"); n != 5 || sum != 15 {
			t.Errorf("through shard %d, Distributed: %d rows, sum %d; want 5 and 15", i+1, n, sum)
		}
	}
	if n, _ := count(1, "rows_local"); n != 2 {
		t.Errorf("shard 2's own table: %d rows, want 2", n)
	}
	if err := c.Conn(t, 0, db, c.Reader).Exec(ctx, "INSERT INTO rows_local SELECT 1, 6"); err == nil {
		t.Error("the reader inserted a row")
	}
}
