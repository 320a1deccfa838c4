package twilio

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"time"
)

// InboundRequest is what POST /inbound takes: an SMS someone sends to one of the account's
// numbers (e.g. STOP), to simulate.
type InboundRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
	Body string `json:"body"`
	// MessagingServiceSID, when set, is sent as the message's messaging service.
	MessagingServiceSID string `json:"messaging_service_sid,omitempty"`
}

// InboundResult is POST /inbound's answer: the inbound message's SID and the HTTP status the
// configured webhook answered.
type InboundResult struct {
	SID    string `json:"sid"`
	Status int    `json:"status"`
}

// maxInboundRequest bounds POST /inbound's body.
const maxInboundRequest = 64 << 10

// inbound simulates an incoming SMS: it posts Twilio's signed "a message comes in" webhook
// (form parameters MessageSid, AccountSid, From, To, Body, …) to Config.InboundURL, once, as
// Twilio does, and answers with what the webhook answered.
func (s *Server) inbound(w http.ResponseWriter, r *http.Request) {
	if s.cfg.InboundURL == "" {
		writeError(w, http.StatusConflict, 0, "no inbound webhook url configured")
		return
	}
	var in InboundRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxInboundRequest)).Decode(&in); err != nil || in.From == "" || in.To == "" {
		writeError(w, http.StatusBadRequest, 21602, "from, to and body are required (json)")
		return
	}
	sid := newSID("SM")
	p := url.Values{
		"MessageSid": {sid}, "SmsSid": {sid}, "SmsMessageSid": {sid}, "AccountSid": {s.cfg.AccountSID},
		"From": {in.From}, "To": {in.To}, "Body": {in.Body}, "NumMedia": {"0"}, "NumSegments": {"1"},
		"SmsStatus": {"received"}, "ApiVersion": {"2010-04-01"},
	}
	if in.MessagingServiceSID != "" {
		p.Set("MessagingServiceSid", in.MessagingServiceSID)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.InboundURL, bytes.NewBufferString(p.Encode()))
	if err != nil {
		writeError(w, http.StatusInternalServerError, 0, "bad inbound webhook url")
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	req.Header.Set("X-Twilio-Signature", s.sign(s.cfg.InboundURL, p))
	res := InboundResult{SID: sid}
	resp, err := s.client.Do(req)
	if err != nil {
		s.log.Warn("twilio stand-in: inbound webhook unreachable")
		res.Status = http.StatusBadGateway
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.Status = resp.StatusCode
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}
