package stripe

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Sign returns the Stripe-Signature header value Stripe sends with a webhook: "t=<unix
// seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the endpoint secret>" (Stripe's
// documented scheme; the whole whsec_… string is the key).
func Sign(secret string, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookRequest is what POST /webhooks/send takes: the event type and customer, and
// optionally the event id (to send the same event again), the object's status, or the
// whole data.object.
type WebhookRequest struct {
	Type     string         `json:"type"`
	Customer string         `json:"customer"`
	ID       string         `json:"id,omitempty"`
	Status   string         `json:"status,omitempty"`
	Object   map[string]any `json:"object,omitempty"`
}

// WebhookResult is the answer of POST /webhooks/send: the event sent and what the receiver
// answered.
type WebhookResult struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
}

// Event builds the event Stripe would send for in (an "event" object of APIVersion shape).
func (s *Server) Event(in WebhookRequest) map[string]any {
	id := in.ID
	if id == "" {
		id = "evt_" + newID(24)
	}
	obj := in.Object
	if obj == nil {
		switch in.Type {
		case "customer.subscription.updated", "customer.subscription.deleted", "customer.subscription.created":
			status := in.Status
			if status == "" {
				status = map[bool]string{true: "canceled", false: "active"}[in.Type == "customer.subscription.deleted"]
			}
			obj = map[string]any{"id": "sub_" + newID(14), "object": "subscription", "customer": in.Customer, "status": status}
		default: // invoice.paid, invoice.payment_failed and other invoice events
			status := in.Status
			if status == "" {
				status = map[bool]string{true: "paid", false: "open"}[in.Type == "invoice.paid"]
			}
			obj = map[string]any{"id": "in_" + newID(14), "object": "invoice", "customer": in.Customer, "status": status}
		}
	}
	return map[string]any{
		"id": id, "object": "event", "api_version": "2025-03-31.basil", "created": s.now().Unix(),
		"type": in.Type, "livemode": false, "pending_webhooks": 1,
		"request": map[string]any{"id": nil, "idempotency_key": nil},
		"data":    map[string]any{"object": obj},
	}
}

// SendWebhook posts the event for in, signed, to the webhook URL and returns the receiver's
// status (0 when no answer came).
func (s *Server) SendWebhook(ctx context.Context, in WebhookRequest) (WebhookResult, error) {
	ev := s.Event(in)
	body, err := json.Marshal(ev)
	if err != nil {
		return WebhookResult{}, err
	}
	s.mu.Lock()
	hook := s.webhookURL
	s.mu.Unlock()
	res := WebhookResult{ID: ev["id"].(string)}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set("Stripe-Signature", Sign(s.secret, body, s.now()))
	resp, err := s.client.Do(req)
	if err != nil {
		s.log.Warn("stripe stand-in: webhook post failed", "event", res.ID, "type", in.Type)
		return res, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	res.Status = resp.StatusCode
	s.log.Info("stripe stand-in: webhook posted", "event", res.ID, "type", in.Type, "status", res.Status)
	return res, nil
}

// sendWebhook serves POST /webhooks/send.
func (s *Server) sendWebhook(w http.ResponseWriter, r *http.Request) {
	var in WebhookRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil || in.Type == "" || (in.Customer == "" && in.Object == nil) {
		http.Error(w, `want {"type":"invoice.payment_failed","customer":"cus_…"[,"id":"evt_…"][,"status":"…"][,"object":{…}]}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	hook := s.webhookURL
	s.mu.Unlock()
	if hook == "" {
		http.Error(w, "no webhook url configured (-stripe-webhook-url)", http.StatusConflict)
		return
	}
	res, err := s.SendWebhook(r.Context(), in)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		_ = json.NewEncoder(w).Encode(map[string]any{"id": res.ID, "error": "the webhook receiver did not answer"})
		return
	}
	writeJSON(w, res)
}
