package idempotency_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/idempotency"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
)

var createCampaign = &grpc.UnaryServerInfo{FullMethod: campaignsv1.CampaignService_CreateCampaign_FullMethodName}

func tenant(id string) context.Context {
	return authn.WithPrincipal(context.Background(), &authn.Principal{TenantID: id})
}

// handler is a create handler that counts its runs and answers a campaign numbered by run.
type handler struct{ runs atomic.Int32 }

func (h *handler) create(_ context.Context, req any) (any, error) {
	n := h.runs.Add(1)
	return &campaignsv1.Campaign{Id: "c" + string(rune('0'+n)), Name: req.(*campaignsv1.CreateCampaignRequest).GetCampaign().GetName()}, nil
}

// newStore returns the interceptor of a store on its own database, and the database.
func newStore(t *testing.T) (*pgxpool.Pool, grpc.UnaryServerInterceptor) {
	t.Helper()
	pool := openDB(t)
	s, err := idempotency.New(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return pool, s.UnaryInterceptor()
}

func create(name, requestID string) *campaignsv1.CreateCampaignRequest {
	return &campaignsv1.CreateCampaignRequest{Campaign: &campaignsv1.Campaign{Name: name}, RequestId: requestID}
}

func wantError(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	st, _ := apperr.ToStatus(err)
	got := ""
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			got = ei.GetReason()
		}
	}
	if st.Code() != code || got != reason {
		t.Fatalf("%s: %v %q (%s); want %v %s", what, st.Code(), st.Message(), got, code, reason)
	}
}

func TestRequestIDsMustBeWellFormed(t *testing.T) {
	t.Parallel()
	_, intercept := newStore(t)
	h := &handler{}
	for _, id := range []string{"has space", "é", "a/b", strings.Repeat("x", 65)} {
		_, err := intercept(tenant("t1"), create("n", id), createCampaign, h.create)
		wantError(t, "request id "+id, err, codes.InvalidArgument, "INVALID_ARGUMENT")
		if v := err.(*apperr.Error).Violations; len(v) != 1 || v[0].Field != "request_id" {
			t.Fatalf("violations %v; want request_id", v)
		}
	}
	if h.runs.Load() != 0 {
		t.Fatal("the handler ran for a malformed request id")
	}
	// No request id, or a request without the field: every call runs.
	for range 2 {
		if _, err := intercept(tenant("t1"), create("n", ""), createCampaign, h.create); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := intercept(tenant("t1"), &emptypb.Empty{}, createCampaign, func(context.Context, any) (any, error) { return &emptypb.Empty{}, nil }); err != nil {
		t.Fatal(err)
	}
	if h.runs.Load() != 2 {
		t.Fatalf("calls without a request id ran %d times, want 2", h.runs.Load())
	}
}

func TestSameRequestIDSameRequestGetsTheFirstResponse(t *testing.T) {
	t.Parallel()
	_, intercept := newStore(t)
	h := &handler{}
	first, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create)
		if err != nil || !proto.Equal(again.(proto.Message), first.(proto.Message)) {
			t.Fatalf("retry = %v, %v; want the first response %v", again, err, first)
		}
	}
	if h.runs.Load() != 1 {
		t.Fatalf("the handler ran %d times, want once", h.runs.Load())
	}
	// Another tenant's request id is its own: the same id runs again for it.
	if other, err := intercept(tenant("t2"), create("spring", "r-1"), createCampaign, h.create); err != nil || proto.Equal(other.(proto.Message), first.(proto.Message)) {
		t.Fatalf("another tenant's call with the same id: %v, %v; want a run of its own", other, err)
	}
	// Another method's request id too.
	createKey := &grpc.UnaryServerInfo{FullMethod: authv1.AuthService_CreateApiKey_FullMethodName}
	if _, err := intercept(tenant("t1"), &authv1.CreateApiKeyRequest{Name: "k", RequestId: "r-1"}, createKey,
		func(context.Context, any) (any, error) { return &authv1.CreateApiKeyResponse{}, nil }); err != nil {
		t.Fatalf("the same id on another method: %v", err)
	}
}

func TestSameRequestIDDifferentRequestIsRejected(t *testing.T) {
	t.Parallel()
	_, intercept := newStore(t)
	h := &handler{}
	if _, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create); err != nil {
		t.Fatal(err)
	}
	_, err := intercept(tenant("t1"), create("autumn", "r-1"), createCampaign, h.create)
	wantError(t, "same id, different request", err, codes.InvalidArgument, "REQUEST_ID_REUSED")
	if h.runs.Load() != 1 {
		t.Fatalf("the handler ran %d times, want once", h.runs.Load())
	}
}

func TestSecretsAreNotKept(t *testing.T) {
	t.Parallel()
	pool, intercept := newStore(t)
	info := &grpc.UnaryServerInfo{FullMethod: authv1.AuthService_CreateApiKey_FullMethodName}
	req := &authv1.CreateApiKeyRequest{Name: "reader", Scopes: []string{"campaigns.read"}, RequestId: "k-1"}
	issue := func(context.Context, any) (any, error) {
		return &authv1.CreateApiKeyResponse{ApiKey: &authv1.ApiKey{Id: "key-1", Name: "reader"}, Secret: "cmk_live_s3cr3t"}, nil
	}
	first, err := intercept(tenant("t1"), req, info, issue)
	if err != nil || first.(*authv1.CreateApiKeyResponse).GetSecret() != "cmk_live_s3cr3t" {
		t.Fatalf("first call: %v, %v; want the secret shown once", first, err)
	}
	again, err := intercept(tenant("t1"), req, info, issue)
	if err != nil {
		t.Fatal(err)
	}
	if r := again.(*authv1.CreateApiKeyResponse); r.GetSecret() != "" || r.GetApiKey().GetId() != "key-1" {
		t.Fatalf("retry = %v; want the key without its secret", r)
	}
	var stored int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE position('cmk_live_s3cr3t'::bytea IN response) > 0`).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("rows holding the secret: %d, %v", stored, err)
	}
}

func TestFailedCallsAreNotKept(t *testing.T) {
	t.Parallel()
	_, intercept := newStore(t)
	h := &handler{}
	fail := func(context.Context, any) (any, error) {
		return nil, apperr.New(apperr.FailedPrecondition, "TENANT_SUSPENDED", "tenant suspended")
	}
	_, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, fail)
	wantError(t, "failing call", err, codes.FailedPrecondition, "TENANT_SUSPENDED")
	// The retry with the same id runs, and its success is what is kept.
	first, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create)
	if err != nil || h.runs.Load() != 1 {
		t.Fatalf("retry after a failure: %v, %v (runs %d)", first, err, h.runs.Load())
	}
	again, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create)
	if err != nil || !proto.Equal(again.(proto.Message), first.(proto.Message)) || h.runs.Load() != 1 {
		t.Fatalf("second retry: %v, %v (runs %d)", again, err, h.runs.Load())
	}
}

func TestRetryWhileTheFirstCallRunsIsToldToRetryLater(t *testing.T) {
	t.Parallel()
	_, intercept := newStore(t)
	started, release := make(chan struct{}), make(chan struct{})
	slow := func(context.Context, any) (any, error) {
		close(started)
		<-release
		return &campaignsv1.Campaign{Id: "c1"}, nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, slow)
		done <- err
	}()
	<-started
	h := &handler{}
	_, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create)
	wantError(t, "retry while the first call runs", err, codes.Aborted, "REQUEST_IN_PROGRESS")
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create); err != nil || got.(*campaignsv1.Campaign).GetId() != "c1" || h.runs.Load() != 0 {
		t.Fatalf("retry after the first call ended: %v, %v; want its response", got, err)
	}
}

// A request id is remembered for Retention: past it, the same id runs as a new request.
func TestRequestIDsAreForgottenAfterRetention(t *testing.T) {
	t.Parallel()
	pool, intercept := newStore(t)
	h := &handler{}
	if _, err := intercept(tenant("t1"), create("spring", "r-1"), createCampaign, h.create); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `UPDATE idempotency_keys SET create_time = now() - $1::interval - interval '1 minute'`, idempotency.Retention); err != nil {
		t.Fatal(err)
	}
	got, err := intercept(tenant("t1"), create("autumn", "r-1"), createCampaign, h.create)
	if err != nil || got.(*campaignsv1.Campaign).GetName() != "autumn" || h.runs.Load() != 2 {
		t.Fatalf("an expired id reused: %v, %v (runs %d)", got, err, h.runs.Load())
	}
}

// With the database gone, a call with a request id answers UNAVAILABLE, not INTERNAL, and the
// handler does not run (nothing could be remembered).
func TestDatabaseOutageAnswersUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	proxy, url := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	pool, err := pgdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := idempotency.New(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	h := &handler{}
	_, err = s.UnaryInterceptor()(tenant("t1"), create("spring", "r-1"), createCampaign, h.create)
	wantError(t, "database down", err, codes.Unavailable, "STORE_UNAVAILABLE")
	if h.runs.Load() != 0 {
		t.Fatal("the handler ran without its request id claimed")
	}
}
