// Command standin serves the SendGrid, Twilio and Stripe stand-ins (internal/standin/sendgrid,
// internal/standin/twilio and internal/standin/stripe) on three listen addresses, for development (`make run`) and for
// tests that run the delivery service as a process. Each has its outbox at /outbox (GET to
// read, DELETE to empty) and failure injection at /faults.
//
// Credentials come from the environment or files, never from flags (flags show in ps):
// CM_STANDIN_SENDGRID_API_KEY (or -sendgrid-api-key-file), CM_STANDIN_TWILIO_AUTH_TOKEN (or
// -twilio-auth-token-file), CM_STANDIN_STRIPE_API_KEY (or -stripe-api-key-file),
// CM_STANDIN_STRIPE_WEBHOOK_SECRET (or -stripe-webhook-secret-file); without them the dev
// values below are used. The SendGrid webhook
// signing key is kept in -sendgrid-signing-key-file (created when missing) so that the
// verification key stays the same across restarts; it is logged (it is public) and served
// at GET /v3/user/webhooks/event/settings/signed. Logs never show keys, tokens or addresses.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	stripestandin "github.com/campaignmesh/campaignmesh/internal/standin/stripe"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
)

// Development credentials, used when none are configured: the stand-ins only listen on
// loopback by default and reach no provider.
const (
	DevSendGridAPIKey   = "SG.standin-dev-key"
	DevTwilioAccountSID = "AC00000000000000000000000000000000"
	DevTwilioAuthToken  = "standin-dev-auth-token"
	DevStripeAPIKey     = "sk_test_standin_dev_key"
	DevStripeWebhook    = "whsec_standin_dev_secret"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

// run serves the stand-ins until ctx ends. ready, when not nil, gets the bound addresses.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer, ready func(sendgrid, twilio, stripe net.Addr)) error {
	fs := flag.NewFlagSet("standin", flag.ContinueOnError)
	fs.SetOutput(logOut)
	sgAddr := fs.String("sendgrid-addr", "127.0.0.1:8791", "listen address of the SendGrid stand-in")
	twAddr := fs.String("twilio-addr", "127.0.0.1:8792", "listen address of the Twilio stand-in")
	sgKeyFile := fs.String("sendgrid-api-key-file", "", "file holding the SendGrid API key to accept (else $CM_STANDIN_SENDGRID_API_KEY, else the dev key)")
	sgSigningKey := fs.String("sendgrid-signing-key-file", "", "PEM file of the ECDSA P-256 key that signs webhooks; created when missing (empty: a new key each start)")
	sgWebhook := fs.String("sendgrid-webhook-url", "", "where SendGrid Event Webhook posts go (empty: none)")
	sgRate := fs.Int("sendgrid-rate", 0, "SendGrid mail sends per second before 429 (0: unlimited)")
	twAccount := fs.String("twilio-account-sid", DevTwilioAccountSID, "Twilio account SID to accept")
	twTokenFile := fs.String("twilio-auth-token-file", "", "file holding the Twilio auth token (else $CM_STANDIN_TWILIO_AUTH_TOKEN, else the dev token)")
	twCallback := fs.String("twilio-callback-url", "", "status callback URL for messages created without StatusCallback (empty: none)")
	twInbound := fs.String("twilio-inbound-url", "", "where POST /inbound posts the signed incoming-SMS webhook (empty: /inbound answers 409)")
	twRate := fs.Int("twilio-rate", 0, "Twilio messages per second before 429/20429 (0: unlimited)")
	pubOut := fs.String("sendgrid-public-key-out", "", "file to write the webhook verification key into, as SendGrid shows it (for the receiver's configuration; empty: none)")
	stAddr := fs.String("stripe-addr", "127.0.0.1:8793", "listen address of the Stripe stand-in")
	stKeyFile := fs.String("stripe-api-key-file", "", "file holding the Stripe secret key to accept (else $CM_STANDIN_STRIPE_API_KEY, else the dev key)")
	stSecretFile := fs.String("stripe-webhook-secret-file", "", "file holding the Stripe webhook signing secret (whsec_…; else $CM_STANDIN_STRIPE_WEBHOOK_SECRET, else the dev secret)")
	stWebhook := fs.String("stripe-webhook-url", "", "where POST /webhooks/send posts the signed Stripe events (empty: /webhooks/send answers 409)")
	caFile := fs.String("webhook-ca-file", "", "PEM CA bundle the webhook and callback receivers' TLS certificates are checked against (empty: the system's)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: lvl})).With("service", "standin")

	apiKey, err := secret(*sgKeyFile, getenv("CM_STANDIN_SENDGRID_API_KEY"), DevSendGridAPIKey)
	if err != nil {
		return fmt.Errorf("sendgrid api key: %w", err)
	}
	token, err := secret(*twTokenFile, getenv("CM_STANDIN_TWILIO_AUTH_TOKEN"), DevTwilioAuthToken)
	if err != nil {
		return fmt.Errorf("twilio auth token: %w", err)
	}
	stKey, err := secret(*stKeyFile, getenv("CM_STANDIN_STRIPE_API_KEY"), DevStripeAPIKey)
	if err != nil {
		return fmt.Errorf("stripe api key: %w", err)
	}
	stSecret, err := secret(*stSecretFile, getenv("CM_STANDIN_STRIPE_WEBHOOK_SECRET"), DevStripeWebhook)
	if err != nil {
		return fmt.Errorf("stripe webhook secret: %w", err)
	}
	signing, err := signingKey(*sgSigningKey)
	if err != nil {
		return fmt.Errorf("sendgrid signing key: %w", err)
	}
	hooks, err := webhookClient(*caFile)
	if err != nil {
		return fmt.Errorf("webhook CA: %w", err)
	}
	sg, err := sgstandin.New(sgstandin.Config{
		APIKey: apiKey, WebhookURL: *sgWebhook, RatePerSecond: *sgRate, Key: signing,
		Logger: log.With("provider", "sendgrid"), HTTPClient: hooks,
	})
	if err != nil {
		return err
	}
	defer sg.Close()
	if *pubOut != "" {
		if err := os.WriteFile(*pubOut, []byte(sg.PublicKey()+"\n"), 0o600); err != nil {
			return fmt.Errorf("write the webhook verification key: %w", err)
		}
	}
	tw, err := twstandin.New(twstandin.Config{
		AccountSID: *twAccount, AuthToken: token, CallbackURL: *twCallback, InboundURL: *twInbound, RatePerSecond: *twRate,
		Logger: log.With("provider", "twilio"), HTTPClient: hooks,
	})
	if err != nil {
		return err
	}
	defer tw.Close()
	st, err := stripestandin.New(stripestandin.Config{
		APIKey: stKey, WebhookSecret: stSecret, WebhookURL: *stWebhook,
		Logger: log.With("provider", "stripe"), HTTPClient: hooks,
	})
	if err != nil {
		return err
	}
	defer st.Close()

	sgLn, err := net.Listen("tcp", *sgAddr)
	if err != nil {
		return fmt.Errorf("listen for sendgrid: %w", err)
	}
	twLn, err := net.Listen("tcp", *twAddr)
	if err != nil {
		sgLn.Close()
		return fmt.Errorf("listen for twilio: %w", err)
	}
	stLn, err := net.Listen("tcp", *stAddr)
	if err != nil {
		sgLn.Close()
		twLn.Close()
		return fmt.Errorf("listen for stripe: %w", err)
	}
	servers := []*http.Server{
		{Handler: sg, ReadHeaderTimeout: 10 * time.Second},
		{Handler: tw, ReadHeaderTimeout: 10 * time.Second},
		{Handler: st, ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, 3)
	for i, ln := range []net.Listener{sgLn, twLn, stLn} {
		go func() { errc <- servers[i].Serve(ln) }()
	}
	log.Info("standin listening",
		"sendgrid", "http://"+sgLn.Addr().String(), "twilio", "http://"+twLn.Addr().String(),
		"sendgrid_outbox", "http://"+sgLn.Addr().String()+"/outbox", "twilio_outbox", "http://"+twLn.Addr().String()+"/outbox",
		"stripe", "http://"+stLn.Addr().String(), "stripe_outbox", "http://"+stLn.Addr().String()+"/outbox",
		"sendgrid_verification_key", sg.PublicKey(), "twilio_account_sid", *twAccount,
		"dev_credentials", apiKey == DevSendGridAPIKey || token == DevTwilioAuthToken || stKey == DevStripeAPIKey || stSecret == DevStripeWebhook)
	if ready != nil {
		ready(sgLn.Addr(), twLn.Addr(), stLn.Addr())
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	// Hung requests (injected faults) end when the stand-ins close, so close them first.
	sg.Close()
	tw.Close()
	st.Close()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdown)
	}
	log.Info("standin stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// secret reads a credential from file, else takes env, else the dev value.
func secret(file, env, dev string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s is empty", file)
		}
		return s, nil
	}
	if env != "" {
		return env, nil
	}
	return dev, nil
}

// signingKey loads the webhook signing key from file, creating the file with a new key when
// it does not exist; no file: a new key.
// webhookClient is the client webhooks and callbacks are posted with: trusting caFile's CAs
// when set (the dev CA of the gateway), with the stand-ins' 10 s timeout.
func webhookClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no certificate", caFile)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

func signingKey(file string) (*ecdsa.PrivateKey, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", file)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s is not an ECDSA P-256 key", file)
	}
	return key, nil
}
