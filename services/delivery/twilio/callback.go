package twilio

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// SignatureHeader carries Twilio's request signature.
const SignatureHeader = "X-Twilio-Signature"

// MaxCallbackBytes bounds a status callback body (a few hundred bytes in practice).
const MaxCallbackBytes = 64 << 10

// ErrBadSignature is returned for a callback whose X-Twilio-Signature does not verify: the
// request must be refused (403).
var ErrBadSignature = errors.New("twilio callback: signature does not verify")

// Validator checks X-Twilio-Signature with the account's auth token. Twilio signs no
// timestamp, so a captured callback can be replayed as is: consumers deduplicate on
// (MessageSid, MessageStatus), which is stable across Twilio's redeliveries.
type Validator struct {
	token Secret
}

// NewValidator returns a validator for the auth token that signs the account's callbacks.
func NewValidator(authToken Secret) *Validator { return &Validator{token: authToken} }

// Signature computes Twilio's signature of a request to fullURL with POST params: the
// base64 HMAC-SHA1, keyed by the auth token, of the URL followed by each parameter's name
// and value, parameters sorted by name (and a name's values sorted).
func (v *Validator) Signature(fullURL string, params url.Values) string {
	mac := hmac.New(sha1.New, []byte(v.token.Reveal()))
	mac.Write([]byte(fullURL))
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		values := slices.Clone(params[k])
		slices.Sort(values)
		for _, val := range values {
			mac.Write([]byte(k))
			mac.Write([]byte(val))
		}
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Validate reports whether signature signs a request to fullURL with params. As Twilio's
// SDKs do, the URL is tried as given and with the port added (the scheme's default) or
// removed, since Twilio may have signed either form.
func (v *Validator) Validate(fullURL string, params url.Values, signature string) bool {
	if signature == "" {
		return false
	}
	ok := false
	for _, u := range urlForms(fullURL) {
		// Every form is computed, so timing does not tell which one matched.
		if subtle.ConstantTimeCompare([]byte(v.Signature(u, params)), []byte(signature)) == 1 {
			ok = true
		}
	}
	return ok
}

func urlForms(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return []string{raw}
	}
	forms := []string{raw}
	port := map[string]string{"https": "443", "http": "80"}[u.Scheme]
	switch {
	case u.Port() == "" && port != "":
		w := *u
		w.Host = u.Host + ":" + port
		forms = append(forms, w.String())
	case u.Port() != "":
		// twilio-go strips any port, not only the default one.
		w := *u
		w.Host = u.Hostname()
		forms = append(forms, w.String())
	}
	return forms
}

// VerifyRequest checks a status callback request and parses it. publicOrigin is the
// scheme and host Twilio called (https://hooks.example.com), since behind a proxy the
// request does not know it; the path and query are the request's own.
func (v *Validator) VerifyRequest(r *http.Request, publicOrigin string) (StatusCallback, error) {
	r.Body = http.MaxBytesReader(nil, r.Body, MaxCallbackBytes)
	if err := r.ParseForm(); err != nil {
		return StatusCallback{}, fmt.Errorf("read twilio callback: %w", err)
	}
	full := strings.TrimSuffix(publicOrigin, "/") + r.URL.RequestURI()
	if !v.Validate(full, r.PostForm, r.Header.Get(SignatureHeader)) {
		return StatusCallback{}, ErrBadSignature
	}
	return ParseStatusCallback(r.PostForm)
}

// Message statuses a status callback reports.
const (
	StatusQueued      = "queued"
	StatusAccepted    = "accepted"
	StatusSending     = "sending"
	StatusSent        = "sent"
	StatusDelivered   = "delivered"
	StatusUndelivered = "undelivered"
	StatusFailed      = "failed"
	StatusCanceled    = "canceled"
	StatusRead        = "read"
)

// StatusCallback is one status callback of an outgoing message.
type StatusCallback struct {
	MessageSID          string
	MessageStatus       string
	AccountSID          string
	MessagingServiceSID string
	From, To            string
	// ErrorCode is set for failed and undelivered messages (0 otherwise).
	ErrorCode int
	// RawDlrDoneDate is the carrier's delivery-receipt time (YYMMDDhhmm) when sent.
	RawDlrDoneDate string
}

// DedupKey identifies the callback across Twilio's redeliveries: a message reaches each
// status once.
func (c StatusCallback) DedupKey() string { return c.MessageSID + "|" + c.MessageStatus }

// Final reports whether the status is one a message does not leave.
func (c StatusCallback) Final() bool {
	switch c.MessageStatus {
	case StatusDelivered, StatusUndelivered, StatusFailed, StatusCanceled, StatusRead:
		return true
	}
	return false
}

// ParseStatusCallback reads a status callback's form parameters (MessageSid, MessageStatus,
// ErrorCode, …); SmsSid/SmsStatus, the older names, stand in when the new ones are absent.
func ParseStatusCallback(form url.Values) (StatusCallback, error) {
	c := StatusCallback{
		MessageSID:          form.Get("MessageSid"),
		MessageStatus:       form.Get("MessageStatus"),
		AccountSID:          form.Get("AccountSid"),
		MessagingServiceSID: form.Get("MessagingServiceSid"),
		From:                form.Get("From"),
		To:                  form.Get("To"),
		RawDlrDoneDate:      form.Get("RawDlrDoneDate"),
	}
	if c.MessageSID == "" {
		c.MessageSID = form.Get("SmsSid")
	}
	if c.MessageStatus == "" {
		c.MessageStatus = form.Get("SmsStatus")
	}
	if c.MessageSID == "" || c.MessageStatus == "" {
		return c, errors.New("twilio callback: MessageSid and MessageStatus are required")
	}
	if s := form.Get("ErrorCode"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return c, fmt.Errorf("twilio callback: ErrorCode %q is not a number", s)
		}
		c.ErrorCode = n
	}
	return c, nil
}
