package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/gateway"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/grpcapi"
	billingpg "github.com/campaignmesh/campaignmesh/services/billing/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

// Stripe's webhooks through the real gateway to the real billing account server (mTLS, its
// interceptor chain, its database): a signed delivery answers 200 and is acted on once however
// often it comes; a forged, expired or unsigned one answers 400; a body over 1 MiB 413; no
// answer carries a backend's text.
func TestStripeWebhookThroughTheGateway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	store, err := billingpg.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	outbox, err := auditpg.NewOutbox(ctx, store.Pool(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("whsec_gateway")
	v, err := stripe.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	tenant := "00000000-0000-4000-8000-0000000000c3"
	op := &authn.Principal{Subject: "op", Role: rbac.PlatformOperator, Permissions: rbac.PlatformOperator.Permissions()}
	if _, err := billing.NewAccounts(store, nil).SetBillingAccount(ctx, op, tenant, "cus_gw"); err != nil {
		t.Fatal(err)
	}
	ca := mtlstest.NewCA(t)
	srv := grpcserver.New(grpcserver.WithService("billing"), grpcserver.WithTLS(mtlstest.Source(t, ca, "billing").ServerConfig()),
		grpcserver.WithVerifier(meshtest.NewIssuer(t).Verifier()), grpcserver.WithAuditor(outbox), grpcserver.WithErrorClassifier(pgdb.Classify),
		grpcserver.WithLogger(slog.New(slog.DiscardHandler)))
	billingv1.RegisterBillingAccountServiceServer(srv.GRPC(), grpcapi.NewAccountServer(billing.NewAccounts(store, nil), billing.NewWebhooks(v, store, nil)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	conn, err := grpcclient.Dial(lis.Addr().String(), "billing", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	gw, err := gateway.New(context.Background(), gateway.Config{RateLimit: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
		[]gateway.Backend{{Package: "campaignmesh.billing.v1", Conn: conn, RegisterREST: billingv1.RegisterBillingAccountServiceHandler}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	t.Cleanup(hs.Close)

	post := func(body []byte, sig string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, hs.URL+"/webhooks/stripe", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if sig != "" {
			req.Header.Set("Stripe-Signature", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	now := time.Now()
	body := []byte(fmt.Sprintf(`{"id":"evt_gw","type":"invoice.payment_failed","created":%d,"data":{"object":{"id":"in_gw","object":"invoice","customer":"cus_gw","attempt_count":1}}}`, now.Add(-time.Minute).Unix()))
	for i := range 3 {
		if code, b := post(body, stripe.Sign(secret, body, now)); code != http.StatusOK {
			t.Fatalf("delivery %d: %d %q", i, code, b)
		}
	}
	acc, err := store.GetBillingAccount(ctx, tenant)
	if err != nil || acc.Status != billing.AccountFlagged || acc.Revision != 2 {
		t.Fatalf("account after three deliveries of one event: %+v, %v", acc, err)
	}
	for name, sig := range map[string]string{
		"forged":   stripe.Sign([]byte("whsec_forged"), body, now),
		"expired":  stripe.Sign(secret, body, now.Add(-10*time.Minute)),
		"unsigned": "",
	} {
		code, b := post(body, sig)
		if code != http.StatusBadRequest || strings.Contains(b, "signature") || strings.Contains(b, "whsec") {
			t.Errorf("%s: %d %q", name, code, b)
		}
	}
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	if code, _ := post(big, stripe.Sign(secret, big, now)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("over 1 MiB: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/webhooks/stripe", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode == http.StatusOK {
		t.Errorf("GET /webhooks/stripe: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}
