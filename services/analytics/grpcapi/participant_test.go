package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
)

// dsr's participant calls over mTLS through the real interceptor chain: only the dsr identity
// may make them, as itself (other identities are refused, and so is dsr relaying a user's
// token); ResolveSubject,
// ExportSubject and an erasure work end to end on the seeded click of t1's user u-t1, an
// unknown erasure answers NOT_FOUND, and a bad request INVALID_ARGUMENT.
func TestParticipantServiceForDSROnly(t *testing.T) {
	db, conn := seededDatabase(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	a := servicetest.StartAnalytics(t, servicetest.AnalyticsOptions{CA: ca, Database: db,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config:   func(c *app.Config) { c.Erasure.Window = 100 * time.Millisecond }})
	client := func(identity string) dsrv1.ParticipantServiceClient {
		cc, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, ca, identity).ClientConfig("analytics"))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return dsrv1.NewParticipantServiceClient(cc)
	}
	user := &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "u-t1"}
	calls := map[string]func(ctx context.Context, c dsrv1.ParticipantServiceClient) error{
		"ResolveSubject": func(ctx context.Context, c dsrv1.ParticipantServiceClient) error {
			_, err := c.ResolveSubject(ctx, &dsrv1.ResolveSubjectRequest{TenantId: "t9", DsrRequest: "r", Identifiers: []*dsrv1.Identifier{user}})
			return err
		},
		"ExportSubject": func(ctx context.Context, c dsrv1.ParticipantServiceClient) error {
			s, err := c.ExportSubject(ctx, &dsrv1.ExportSubjectRequest{TenantId: "t9", DsrRequest: "r", Identifiers: []*dsrv1.Identifier{user}})
			if err == nil {
				if _, err = s.Recv(); err == io.EOF {
					err = nil
				}
			}
			return err
		},
		"StartErasure": func(ctx context.Context, c dsrv1.ParticipantServiceClient) error {
			_, err := c.StartErasure(ctx, &dsrv1.StartErasureRequest{TenantId: "t9", DsrRequest: "r", Identifiers: []*dsrv1.Identifier{user}})
			return err
		},
		"GetErasure": func(ctx context.Context, c dsrv1.ParticipantServiceClient) error {
			_, err := c.GetErasure(ctx, &dsrv1.GetErasureRequest{TenantId: "t9", DsrRequest: "never-started"})
			if status.Code(err) == codes.NotFound {
				return nil
			}
			return err
		},
	}
	admin := as(signer(t, priv)("t1", rbac.Admin))
	for method, call := range calls {
		for _, id := range []string{"dsr", "gateway", "campaigns", "ingest"} {
			for i, ctx := range []context.Context{context.Background(), admin} {
				want := codes.PermissionDenied
				if id == "dsr" && i == 0 { // dsr as itself; with a user's token it would relay a user
					want = codes.OK
				}
				if got := status.Code(call(ctx, client(id))); got != want {
					t.Errorf("%s as %s: %s, want %s", method, id, got, want)
				}
			}
		}
	}

	dsr := client("dsr")
	ctx := context.Background()
	if _, err := dsr.ResolveSubject(ctx, &dsrv1.ResolveSubjectRequest{TenantId: "t1", DsrRequest: "r1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no identifiers: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := dsr.StartErasure(ctx, &dsrv1.StartErasureRequest{TenantId: "t1", DsrRequest: "r1",
		Identifiers: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_Kind(9), Value: "x"}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown kind: %v, want INVALID_ARGUMENT", err)
	}
	stream, err := dsr.ExportSubject(ctx, &dsrv1.ExportSubjectRequest{TenantId: "t1", DsrRequest: "r1", Identifiers: []*dsrv1.Identifier{user}})
	if err != nil {
		t.Fatal(err)
	}
	var records []*dsrv1.ExportSubjectResponse
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, r)
	}
	if len(records) != 1 || records[0].GetType() != "event" || records[0].GetData().GetFields()["user_id"].GetStringValue() != "u-t1" ||
		records[0].GetData().GetFields()["value_micros"].GetNumberValue() != 1000 || records[0].GetData().GetFields()["context"].GetStructValue() == nil {
		t.Fatalf("export of u-t1: %v", records)
	}
	st, err := dsr.StartErasure(ctx, &dsrv1.StartErasureRequest{TenantId: "t1", DsrRequest: "r1", Identifiers: []*dsrv1.Identifier{user}})
	if err != nil || st.GetDone() {
		t.Fatalf("start: %v, %v", st, err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool {
		st, err = dsr.GetErasure(ctx, &dsrv1.GetErasureRequest{TenantId: "t1", DsrRequest: "r1"})
		return err == nil && st.GetDone()
	}, "the erasure did not finish: %v, %v", st, err)
	if st.GetCounts()["events"] != 1 || st.GetRemaining() != 0 {
		t.Fatalf("done erasure: %v", st)
	}
	var left uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM events_local WHERE user_id = 'u-t1'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("u-t1's events left: %d, %v", left, err)
	}
	if err := conn.QueryRow(ctx, `SELECT count() FROM events_local WHERE user_id = 'u-t2'`).Scan(&left); err != nil || left != 1 {
		t.Fatalf("t2's event: %d, %v", left, err)
	}
	// Repeated: the same status, nothing started again.
	again, err := dsr.StartErasure(ctx, &dsrv1.StartErasureRequest{TenantId: "t1", DsrRequest: "r1", Identifiers: []*dsrv1.Identifier{user}})
	if err != nil || !again.GetDone() || again.GetCounts()["events"] != 1 {
		t.Fatalf("repeated start: %v, %v", again, err)
	}
}
