package gateway

import (
	"context"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
)

// The tracking routes are plain HTTP handlers for people and providers who hold no credential:
// recipients following a tracked link, loading the open pixel or unsubscribing, and the
// providers posting signed webhooks. The gateway only relays them to delivery's TrackingService,
// which verifies the tokens and signatures (it holds the keys). They are rate limited per client
// IP like every HTTP route (allowHTTP runs first) and their bodies are capped; answers never
// carry a backend's error text.

// deliveryPackage (contactsimport.go) is the backend these routes reach.
const (
	// trackingTimeout bounds one relayed call: a click must redirect promptly.
	trackingTimeout = 10 * time.Second
	// maxWebhookBody is the largest webhook body relayed (delivery refuses more too).
	maxWebhookBody = 1 << 20
	// maxTrackingToken bounds a token in a path (delivery's tokens are far shorter).
	maxTrackingToken = 4096
)

// pixel is a transparent 1×1 GIF.
var pixel = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

// twilioEmptyResponse is the TwiML that tells Twilio to send no reply.
const twilioEmptyResponse = `<?xml version="1.0" encoding="UTF-8"?><Response></Response>`

type trackingRoutes struct {
	client deliveryv1.TrackingServiceClient
	log    *slog.Logger
}

// registerTracking serves the tracking routes on mux when a delivery backend is configured.
func registerTracking(mux *http.ServeMux, backends []Backend, log *slog.Logger) {
	var t *trackingRoutes
	for _, b := range backends {
		if b.Package == deliveryPackage {
			t = &trackingRoutes{client: deliveryv1.NewTrackingServiceClient(b.Conn), log: log}
		}
	}
	if t == nil {
		return
	}
	mux.HandleFunc("GET /t/c/{token}", t.click)
	mux.HandleFunc("GET /t/o/{token}", t.open)
	mux.HandleFunc("GET /u/{token}", t.unsubscribePage)
	mux.HandleFunc("POST /u/{token}", t.unsubscribe)
	mux.HandleFunc("POST /webhooks/sendgrid", t.webhook(deliveryv1.WebhookKind_WEBHOOK_KIND_SENDGRID_EVENTS, "X-Twilio-Email-Event-Webhook-Signature", "X-Twilio-Email-Event-Webhook-Timestamp"))
	mux.HandleFunc("POST /webhooks/twilio/status", t.webhook(deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_STATUS, "X-Twilio-Signature"))
	mux.HandleFunc("POST /webhooks/twilio/inbound", t.webhook(deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_INBOUND, "X-Twilio-Signature"))
}

// labelRoute names the route in the edge metrics by its pattern (never the token).
func labelRoute(r *http.Request) {
	if slot, ok := r.Context().Value(routeKey{}).(*routeSlot); ok {
		slot.route = r.Pattern
	}
}

// token is the path's token, or "" when it is not one delivery could have made.
func token(r *http.Request) string {
	tok := r.PathValue("token")
	if tok == "" || len(tok) > maxTrackingToken {
		return ""
	}
	return tok
}

// noStore keeps tracking answers out of caches: every click and open must reach us.
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

// httpStatusOf maps a relayed call's error to what the recipient or provider sees: not found
// for any token or URL that does not verify, forbidden for a bad signature, retry later for the
// rest (a provider then redelivers).
func (t *trackingRoutes) httpStatusOf(r *http.Request, err error) int {
	switch status.Code(err) {
	case codes.NotFound, codes.FailedPrecondition:
		return http.StatusNotFound
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.InvalidArgument:
		return http.StatusBadRequest
	}
	t.log.WarnContext(r.Context(), "tracking call failed", "route", r.Pattern, "code", status.Code(err).String())
	return http.StatusServiceUnavailable
}

func (t *trackingRoutes) click(w http.ResponseWriter, r *http.Request) {
	labelRoute(r)
	noStore(w)
	tok := token(r)
	if tok == "" {
		plain(w, http.StatusNotFound, "not found")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), trackingTimeout)
	defer cancel()
	resp, err := t.client.TrackClick(ctx, &deliveryv1.TrackClickRequest{Token: tok, UserAgent: r.UserAgent(), Ip: clientIPFromContext(r.Context())})
	if err != nil {
		code := t.httpStatusOf(r, err)
		plain(w, code, strings.ToLower(http.StatusText(code)))
		return
	}
	http.Redirect(w, r, resp.GetTargetUrl(), http.StatusFound)
}

// open answers the pixel whatever happens: a broken image in a message helps nobody.
func (t *trackingRoutes) open(w http.ResponseWriter, r *http.Request) {
	labelRoute(r)
	noStore(w)
	tok, ok := strings.CutSuffix(token(r), ".gif")
	if ok && tok != "" {
		ctx, cancel := context.WithTimeout(r.Context(), trackingTimeout)
		_, err := t.client.TrackOpen(ctx, &deliveryv1.TrackOpenRequest{Token: tok, UserAgent: r.UserAgent(), Ip: clientIPFromContext(r.Context())})
		cancel()
		if err != nil && status.Code(err) != codes.NotFound {
			t.log.WarnContext(r.Context(), "open not recorded", "code", status.Code(err).String())
		}
	}
	w.Header().Set("Content-Type", "image/gif")
	_, _ = w.Write(pixel)
}

// unsubscribeHTML is the page of /u/{token}: the GET only shows it; its button POSTs to the same
// URL, as a mail client's RFC 8058 one-click POST does.
var unsubscribeHTML = template.Must(template.New("unsubscribe").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{.Title}}</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem">
<h1>{{.Title}}</h1><p>{{.Text}}</p>
{{if .Form}}<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>{{end}}
</body></html>
`))

type unsubscribePage struct {
	Title, Text string
	Form        bool
}

func page(w http.ResponseWriter, code int, p unsubscribePage) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = unsubscribeHTML.Execute(w, p)
}

func (t *trackingRoutes) unsubscribePage(w http.ResponseWriter, r *http.Request) {
	labelRoute(r)
	noStore(w)
	tok := token(r)
	var err error = status.Error(codes.NotFound, "")
	if tok != "" {
		ctx, cancel := context.WithTimeout(r.Context(), trackingTimeout)
		_, err = t.client.GetUnsubscribe(ctx, &deliveryv1.GetUnsubscribeRequest{Token: tok})
		cancel()
	}
	if err != nil {
		code := t.httpStatusOf(r, err)
		page(w, code, unsubscribePage{Title: "Link not valid", Text: "This unsubscribe link is not valid or has expired."})
		return
	}
	page(w, http.StatusOK, unsubscribePage{Title: "Unsubscribe", Text: "Stop receiving these emails?", Form: true})
}

// unsubscribe is the RFC 8058 one-click POST (body List-Unsubscribe=One-Click) and the page's
// form alike: the POST itself unsubscribes, with no further confirmation.
func (t *trackingRoutes) unsubscribe(w http.ResponseWriter, r *http.Request) {
	labelRoute(r)
	noStore(w)
	_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4096)) // the body says nothing we need
	tok := token(r)
	var err error = status.Error(codes.NotFound, "")
	if tok != "" {
		ctx, cancel := context.WithTimeout(r.Context(), trackingTimeout)
		_, err = t.client.Unsubscribe(ctx, &deliveryv1.UnsubscribeRequest{Token: tok})
		cancel()
	}
	if err != nil {
		code := t.httpStatusOf(r, err)
		page(w, code, unsubscribePage{Title: "Not unsubscribed", Text: "This unsubscribe link is not valid, or we could not process it now: please try again later."})
		return
	}
	page(w, http.StatusOK, unsubscribePage{Title: "Unsubscribed", Text: "You will not receive these emails any more."})
}

// webhook relays a provider's webhook with the headers its signature needs and the URL the
// provider called (Twilio signs it): the gateway's own origin, as the provider reached it
// (a proxy in front must keep the Host header).
func (t *trackingRoutes) webhook(kind deliveryv1.WebhookKind, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		labelRoute(r)
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			plain(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		req := &deliveryv1.ReceiveProviderWebhookRequest{Kind: kind, Url: scheme + "://" + r.Host + r.URL.RequestURI(),
			Headers: map[string]string{}, Body: body}
		for _, h := range headers {
			if v := r.Header.Get(h); v != "" {
				req.Headers[h] = v
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), trackingTimeout)
		defer cancel()
		if _, err := t.client.ReceiveProviderWebhook(ctx, req); err != nil {
			code := t.httpStatusOf(r, err)
			plain(w, code, strings.ToLower(http.StatusText(code)))
			return
		}
		if kind == deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_INBOUND {
			w.Header().Set("Content-Type", "text/xml")
			_, _ = io.WriteString(w, twilioEmptyResponse)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}
