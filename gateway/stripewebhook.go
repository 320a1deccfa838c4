package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// Stripe's webhooks arrive at POST /webhooks/stripe with no credential: Stripe signs them
// (Stripe-Signature) and billing, which holds the endpoint secret, verifies them. The gateway
// relays the raw body byte for byte (the signature covers it) and the header, bounded like every
// webhook body, rate limited like every HTTP route, and answers without a backend's text:
// 200 handled (also a repeat, an ignored type or an unknown customer), 400 bad signature or
// payload, 413 too large, 503 anything else (Stripe then redelivers, for up to three days).

const (
	// billingPackage is the backend the route reaches.
	billingPackage = "campaignmesh.billing.v1"
	// stripeWebhookPath is the route Stripe's webhook endpoint is configured with.
	stripeWebhookPath = "/webhooks/stripe"
	// stripeWebhookTimeout bounds one relayed delivery (Stripe waits about 20 s at most).
	stripeWebhookTimeout = 10 * time.Second
)

// registerStripeWebhook serves POST /webhooks/stripe on mux when a billing backend is
// configured.
func registerStripeWebhook(mux *http.ServeMux, backends []Backend, log *slog.Logger) {
	for _, b := range backends {
		if b.Package == billingPackage {
			client := billingv1.NewBillingAccountServiceClient(b.Conn)
			mux.HandleFunc("POST "+stripeWebhookPath, stripeWebhook(client, log))
		}
	}
}

func stripeWebhook(client billingv1.BillingAccountServiceClient, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		labelRoute(r)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			plain(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), stripeWebhookTimeout)
		defer cancel()
		_, err = client.HandleStripeWebhook(ctx, &billingv1.HandleStripeWebhookRequest{Payload: body, Signature: r.Header.Get("Stripe-Signature")})
		switch status.Code(err) {
		case codes.OK:
			plain(w, http.StatusOK, "ok")
		case codes.InvalidArgument:
			plain(w, http.StatusBadRequest, "bad request")
		default:
			log.WarnContext(r.Context(), "stripe webhook relay failed", "code", status.Code(err).String())
			plain(w, http.StatusServiceUnavailable, "service unavailable")
		}
	}
}
