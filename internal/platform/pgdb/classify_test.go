package pgdb_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
)

// wantUnavailable checks that err is recognised and answers UNAVAILABLE with retry info, with
// the driver's text kept for the log but not in the answer.
func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if !pgdb.Unavailable(err) {
		t.Fatalf("%s: %v not recognised as unavailable", what, err)
	}
	t.Logf("%s: %v", what, err)
	classified := pgdb.Classify(fmt.Errorf("%s: %w", what, err))
	st, ref := apperr.ToStatus(classified)
	if st.Code() != codes.Unavailable || ref != "" || strings.Contains(st.Message(), err.Error()) {
		t.Fatalf("%s: answered %v %q", what, st.Code(), st.Message())
	}
	var retry, reason bool
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration() > 0
		case *errdetails.ErrorInfo:
			reason = d.GetReason() == "STORE_UNAVAILABLE"
		}
	}
	if !retry || !reason {
		t.Fatalf("%s: details %v; want RetryInfo and STORE_UNAVAILABLE", what, st.Details())
	}
	if !strings.Contains(classified.Error(), err.Error()) || !errors.Is(classified, err) {
		t.Fatalf("%s: the cause is lost for the log: %v", what, classified)
	}
}

// A database that goes away — connections refused, broken under a held connection, ended by
// the server, or a server that never answers — is UNAVAILABLE, over real connections.
func TestClassifyRealOutages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)

	t.Run("refused and broken", func(t *testing.T) {
		proxy, viaProxy := pgtest.NewProxy(t, dbURL)
		pool, err := pgdb.Open(ctx, viaProxy)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		held, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		proxy.Cut()
		_, err = held.Exec(ctx, "SELECT 1")
		wantUnavailable(t, "broken connection", err)
		_, err = pool.Exec(ctx, "SELECT 1")
		wantUnavailable(t, "refused connection", err)
	})

	t.Run("terminated by the server", func(t *testing.T) {
		pool, err := pgdb.Open(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		victim, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Release()
		pid := victim.Conn().PgConn().PID()
		if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		_, err = victim.Exec(ctx, "SELECT 1")
		wantUnavailable(t, "terminated backend", err)
	})

	t.Run("no answer within the connect timeout", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0") // accepts (backlog) and never speaks
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		conn, err := pgx.Connect(ctx, "postgres://x@"+lis.Addr().String()+"/x?connect_timeout=1&sslmode=disable")
		if err == nil {
			conn.Close(ctx)
			t.Fatal("connected to a server that never answers")
		}
		wantUnavailable(t, "connect timeout", err)
	})
}

func TestClassifyLeavesOtherErrorsAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgdb.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, syntax := pool.Exec(ctx, "SELEC 1")
	_, missing := pool.Exec(ctx, "SELECT * FROM no_such_table")
	noRows := pool.QueryRow(ctx, "SELECT 1 WHERE false").Scan(new(int))
	canceledCtx, cancel := context.WithCancel(ctx)
	cancel()
	_, canceled := pool.Exec(canceledCtx, "SELECT 1")
	deadlineCtx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	_, deadline := pool.Exec(deadlineCtx, "SELECT pg_sleep(1)")
	for name, err := range map[string]error{
		"syntax": syntax, "missing table": missing, "no rows": noRows, "canceled": canceled, "deadline": deadline,
		"domain error":   apperr.NotFoundf("campaign %s", "c1"),
		"wrong password": &pgconn.PgError{Code: "28P01"},
	} {
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if pgdb.Unavailable(err) || pgdb.Classify(err) != err {
			t.Errorf("%s: %v taken for an outage", name, err)
		}
	}
	for _, code := range []string{"08000", "08006", "57P01", "57P02", "57P03", "53300"} {
		if !pgdb.Unavailable(fmt.Errorf("x: %w", &pgconn.PgError{Severity: "FATAL", Code: code})) {
			t.Errorf("SQLSTATE %s not taken for an outage", code)
		}
	}
}
