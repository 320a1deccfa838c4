package twilio_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

type capturedCallback struct {
	uri, signature string
	form           url.Values
}

type callbackSink struct {
	mu   sync.Mutex
	reqs []capturedCallback
}

func (s *callbackSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	s.mu.Lock()
	s.reqs = append(s.reqs, capturedCallback{r.URL.RequestURI(), r.Header.Get(twilio.SignatureHeader), form})
	s.mu.Unlock()
}

func (s *callbackSink) all() []capturedCallback {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]capturedCallback(nil), s.reqs...)
}

// request rebuilds a captured callback as the server would receive it.
func (c capturedCallback) request(form url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, c.uri, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set(twilio.SignatureHeader, c.signature)
	return r
}

func TestStatusCallbacksFromStandIn(t *testing.T) {
	t.Parallel()
	sink := &callbackSink{}
	hook := httptest.NewServer(sink)
	t.Cleanup(hook.Close)
	_, base := startStandIn(t, twstandin.Config{})
	c := newClient(t, base, 5*time.Second)
	p := sms("+15551234567")
	p.StatusCallback = hook.URL + "/webhooks/twilio?tenant=t1"
	ok, err := c.Send(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	p = sms(twstandin.UndeliverablePrefix + "1234567")
	p.StatusCallback = hook.URL + "/webhooks/twilio?tenant=t1"
	bad, err := c.Send(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return len(sink.all()) == 4 }, "4 status callbacks")
	v := twilio.NewValidator(authToken)
	final := map[string]twilio.StatusCallback{}
	for _, cb := range sink.all() {
		got, err := v.VerifyRequest(cb.request(cb.form), hook.URL)
		if err != nil {
			t.Fatalf("stand-in callback does not verify: %v", err)
		}
		if got.Final() {
			final[got.MessageSID] = got
		}
	}
	if d := final[ok.SID]; d.MessageStatus != twilio.StatusDelivered || d.To != "+15551234567" || d.AccountSID != account || d.ErrorCode != 0 {
		t.Fatalf("delivered callback %+v", d)
	}
	if u := final[bad.SID]; u.MessageStatus != twilio.StatusUndelivered || u.ErrorCode != 30003 {
		t.Fatalf("undelivered callback %+v", u)
	}

	sample := sink.all()[0]
	altered := func(f func(url.Values)) url.Values {
		v := url.Values{}
		for k, vs := range sample.form {
			v[k] = append([]string(nil), vs...)
		}
		f(v)
		return v
	}
	cases := []struct {
		name   string
		req    *http.Request
		origin string
		v      *twilio.Validator
	}{
		{"altered param", sample.request(altered(func(v url.Values) { v.Set("MessageStatus", "failed") })), hook.URL, v},
		{"added param", sample.request(altered(func(v url.Values) { v.Set("ErrorCode", "30007") })), hook.URL, v},
		{"removed param", sample.request(altered(func(v url.Values) { v.Del("To") })), hook.URL, v},
		{"altered url query", capturedCallback{strings.Replace(sample.uri, "t1", "t2", 1), sample.signature, nil}.request(sample.form), hook.URL, v},
		{"altered url host", sample.request(sample.form), "http://evil.example", v},
		{"other token", sample.request(sample.form), hook.URL, twilio.NewValidator("other")},
		{"no signature", capturedCallback{sample.uri, "", nil}.request(sample.form), hook.URL, v},
	}
	for _, tc := range cases {
		if _, err := tc.v.VerifyRequest(tc.req, tc.origin); !errors.Is(err, twilio.ErrBadSignature) {
			t.Errorf("%s: got %v, want ErrBadSignature", tc.name, err)
		}
	}
}

func TestValidatePortForms(t *testing.T) {
	t.Parallel()
	v := twilio.NewValidator("tok")
	params := url.Values{"MessageSid": {"SM1"}, "MessageStatus": {"sent"}}
	signedWithout := v.Signature("https://h.example/cb?x=1", params)
	signedWith := v.Signature("https://h.example:443/cb?x=1", params)
	if !v.Validate("https://h.example/cb?x=1", params, signedWith) || !v.Validate("https://h.example:443/cb?x=1", params, signedWithout) {
		t.Fatal("default port forms not accepted")
	}
	if v.Validate("https://h.example/cb?x=2", params, signedWithout) {
		t.Fatal("another query accepted")
	}
}

// TestTwilioPublishedVector checks the example of twilio-go's request validator tests
// (client/request_validator_test.go): token 12345, that URL and those parameters.
func TestTwilioPublishedVector(t *testing.T) {
	t.Parallel()
	v := twilio.NewValidator("12345")
	params := url.Values{"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"}, "Caller": {"+14158675309"}, "From": {"+14158675309"}}
	const u = "https://mycompany.com/myapp.php?foo=1&bar=2"
	if !v.Validate(u, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") {
		t.Fatal("published signature refused")
	}
	if !v.Validate("https://mycompany.com:1234/myapp.php?foo=1&bar=2", params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") {
		t.Fatal("published signature refused with a port in the url")
	}
	params.Set("Digits", "1235")
	if v.Validate(u, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") {
		t.Fatal("altered parameter accepted")
	}
}

// TestSignatureKnownAnswer pins the algorithm to an independent computation: HMAC-SHA1 of
// URL followed by the sorted name+value pairs, computed with openssl (see the comment) rather than with our code.
func TestSignatureKnownAnswer(t *testing.T) {
	t.Parallel()
	// printf '%s' 'https://example.com/cbMessageSidSM1MessageStatusdeliveredTo+15551234567' |
	//   openssl dgst -sha1 -hmac 'secret' -binary | base64
	const want = "zW+LmjsW1w8iecQGZ7v32/QvFhU="
	v := twilio.NewValidator("secret")
	got := v.Signature("https://example.com/cb", url.Values{"To": {"+15551234567"}, "MessageStatus": {"delivered"}, "MessageSid": {"SM1"}})
	if got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func TestParseStatusCallback(t *testing.T) {
	t.Parallel()
	cb, err := twilio.ParseStatusCallback(url.Values{"SmsSid": {"SM1"}, "SmsStatus": {"failed"}, "ErrorCode": {"30008"}})
	if err != nil || cb.MessageSID != "SM1" || cb.MessageStatus != "failed" || cb.ErrorCode != 30008 || !cb.Final() {
		t.Fatalf("parsed %+v, %v", cb, err)
	}
	for _, bad := range []url.Values{{}, {"MessageSid": {"SM1"}}, {"MessageSid": {"SM1"}, "MessageStatus": {"sent"}, "ErrorCode": {"x"}}} {
		if _, err := twilio.ParseStatusCallback(bad); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

func FuzzParseStatusCallback(f *testing.F) {
	f.Add("MessageSid=SM1&MessageStatus=delivered&ErrorCode=0")
	f.Add("SmsSid=SM1&SmsStatus=failed&ErrorCode=30008")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		cb, err := twilio.ParseStatusCallback(form)
		if err == nil && (cb.MessageSID == "" || cb.MessageStatus == "") {
			t.Fatalf("accepted a callback without sid or status: %q", body)
		}
	})
}

func TestCallbackDedupKey(t *testing.T) {
	t.Parallel()
	a := twilio.StatusCallback{MessageSID: "SM1", MessageStatus: "sent"}
	b := twilio.StatusCallback{MessageSID: "SM1", MessageStatus: "delivered"}
	if a.DedupKey() == b.DedupKey() || a.DedupKey() != (twilio.StatusCallback{MessageSID: "SM1", MessageStatus: "sent", To: "+1"}).DedupKey() {
		t.Fatal("dedup keys do not follow (sid, status)")
	}
}
