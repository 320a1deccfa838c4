package sendgrid

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// term is one `field="value"` of an Email Activity query; arg names the custom argument of a
// unique_args['arg'] field.
type term struct{ field, arg, value string }

var termRE = regexp.MustCompile(`^(msg_id|to_email|from_email|subject|status|unique_args\['([^'"]+)'\])="([^"]*)"$`)

// parseQuery reads the subset of SendGrid's Email Activity query language the stand-in
// serves: terms `field="value"` joined by AND, over msg_id, to_email, from_email, subject,
// status and unique_args['name'].
func parseQuery(q string) ([]term, error) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, nil
	}
	var out []term
	for _, part := range strings.Split(q, " AND ") {
		part = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(part), "("), ")"))
		m := termRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("unsupported query term %q", part)
		}
		t := term{field: m[1], arg: m[2], value: m[3]}
		if t.arg != "" {
			t.field = "unique_args"
		}
		out = append(out, t)
	}
	return out, nil
}

func (m *Message) matches(terms []term, msgID string) bool {
	for _, t := range terms {
		var got string
		switch t.field {
		case "msg_id":
			got = msgID
		case "to_email":
			got = m.To
		case "from_email":
			got = m.From
		case "subject":
			got = m.Subject
		case "status":
			got = "delivered"
			if strings.HasSuffix(strings.ToLower(m.To), "@"+BounceDomain) {
				got = "not_delivered"
			}
		case "unique_args":
			got = m.CustomArgs[t.arg]
		}
		if !strings.EqualFold(got, t.value) {
			return false
		}
	}
	return true
}

// activity serves GET /v3/messages?query=…&limit=1..1000: the Email Activity Feed's
// filter, newest first, every accepted message immediately (SendGrid indexes with a delay).
func (s *Server) activity(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeErrors(w, http.StatusUnauthorized, apiError{Message: "authorization required"})
		return
	}
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit < 1 || limit > 1000 {
		writeErrors(w, http.StatusBadRequest, apiError{Message: "limit must be an integer from 1 to 1000", Field: field("limit")})
		return
	}
	terms, err := parseQuery(r.URL.Query().Get("query"))
	if err != nil {
		writeErrors(w, http.StatusBadRequest, apiError{Message: "invalid query: " + err.Error(), Field: field("query")})
		return
	}
	type wire struct {
		FromEmail     string `json:"from_email"`
		MsgID         string `json:"msg_id"`
		Subject       string `json:"subject"`
		ToEmail       string `json:"to_email"`
		Status        string `json:"status"`
		OpensCount    int    `json:"opens_count"`
		ClicksCount   int    `json:"clicks_count"`
		LastEventTime string `json:"last_event_time"`
	}
	out := []wire{}
	s.mu.Lock()
	for i := len(s.messages) - 1; i >= 0 && len(out) < limit; i-- {
		m := &s.messages[i]
		// The feed's msg_id is the full id, as in the events' sg_message_id.
		id := fmt.Sprintf("%s.standin0.%d", m.ID, m.AcceptedAt.Unix())
		if !m.matches(terms, id) {
			continue
		}
		status := "delivered"
		if strings.HasSuffix(strings.ToLower(m.To), "@"+BounceDomain) {
			status = "not_delivered"
		}
		out = append(out, wire{
			FromEmail: m.From, MsgID: id, Subject: m.Subject, ToEmail: m.To, Status: status,
			LastEventTime: m.AcceptedAt.UTC().Format(time.RFC3339),
		})
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"messages": out})
}
