package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"google.golang.org/grpc"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/delivery/ingestclient"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// TrackingConfig configures tracked links, the open pixel, unsubscribe and the providers'
// webhooks (the TrackingService the gateway calls). Without a key file the service is not
// served: the gateway's tracking routes then answer 404.
type TrackingConfig struct {
	// KeyFile holds the key tracking tokens are signed with (at least 32 bytes); PreviousKeyFile,
	// optional, the key before a rotation, still accepted for links already sent.
	KeyFile, PreviousKeyFile string
	// PublicURL is the gateway's public origin the links point at (https://track.example.com).
	PublicURL string
	// IngestAddr is the ingest service tracked events are reported to.
	IngestAddr string
	// SendGridWebhookPublicKeyFile holds the Event Webhook's verification key (base64 DER or
	// PEM); empty: SendGrid webhooks are refused.
	SendGridWebhookPublicKeyFile string
	// TwilioAuthTokenFile holds the auth token Twilio signs callbacks with; empty: Twilio
	// webhooks are refused.
	TwilioAuthTokenFile string

	// Pricing prices delivered messages and clicks; nil: free (until the campaign content's
	// costs are wired in).
	Pricing delivery.Pricing
	// Events, when set, replaces the ingest client (tests).
	Events delivery.EventSink
}

// DefaultTrackingConfig holds the documented defaults.
func DefaultTrackingConfig() TrackingConfig {
	return TrackingConfig{PublicURL: "https://127.0.0.1:8443", IngestAddr: "127.0.0.1:7102"}
}

// RegisterTrackingFlags adds the tracking flags to fs.
func RegisterTrackingFlags(fs *flag.FlagSet, c *TrackingConfig) {
	fs.StringVar(&c.KeyFile, "tracking-key-file", c.KeyFile, "file holding the key tracking links are signed with, at least 32 random bytes (empty: tracking off)")
	fs.StringVar(&c.PreviousKeyFile, "tracking-previous-key-file", c.PreviousKeyFile, "file holding the tracking key before a rotation, still accepted (optional)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "public origin of the gateway that tracked links point at")
	fs.StringVar(&c.IngestAddr, "ingest-addr", c.IngestAddr, "address of the ingest service tracked events are reported to")
	fs.StringVar(&c.SendGridWebhookPublicKeyFile, "sendgrid-webhook-public-key-file", c.SendGridWebhookPublicKeyFile,
		"file holding SendGrid's Event Webhook verification key (empty: SendGrid webhooks refused)")
}

// CheckTracking reports flag problems of c.
func CheckTracking(c TrackingConfig, p *config.Problems) {
	if c.KeyFile == "" {
		return
	}
	u, err := url.Parse(c.PublicURL)
	p.Check(err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && (u.Path == "" || u.Path == "/"),
		"-public-url must be an http(s) origin")
	p.Check(c.IngestAddr != "", "-ingest-addr is required with -tracking-key-file")
}

// Links are the tracked URLs of the configuration, for the message composer (nil when
// tracking is off).
func (a *App) Links() delivery.Links {
	if a.links == nil {
		return nil
	}
	return *a.links
}

// buildLinks loads the tracking key and returns the links signed with it (nil: tracking off,
// no -tracking-key-file).
func buildLinks(c TrackingConfig) (*delivery.TrackingLinks, error) {
	if c.KeyFile == "" {
		return nil, nil
	}
	key, err := delivery.LoadTrackingKey(c.KeyFile, c.PreviousKeyFile)
	if err != nil {
		return nil, err
	}
	return &delivery.TrackingLinks{BaseURL: c.PublicURL, Key: key}, nil
}

// registerTracking builds the tracker and serves TrackingService on srv, when c has a key
// (buildLinks made a.links first).
func (a *App) registerTracking(c TrackingConfig, certs *mtls.Source, srv *grpc.Server, logger *slog.Logger) error {
	if c.KeyFile == "" {
		return nil
	}
	if a.links == nil {
		return errors.New("tracking: no links built") // buildLinks runs first in New
	}
	key := a.links.Key
	events := c.Events
	if events == nil {
		client, conn, err := ingestclient.Dial(c.IngestAddr, certs)
		if err != nil {
			return err
		}
		a.OnClose(func() { conn.Close() })
		events = client
	}
	pricing := c.Pricing
	if pricing == nil {
		pricing = a.messages
	}
	var sg *sendgrid.Verifier
	if c.SendGridWebhookPublicKeyFile != "" {
		s, err := readSecret("-sendgrid-webhook-public-key-file", c.SendGridWebhookPublicKeyFile)
		if err != nil {
			return err
		}
		pub, err := sendgrid.ParsePublicKey(s)
		if err != nil {
			return err
		}
		sg = sendgrid.NewVerifier(pub, 0, nil)
	}
	var tw *twilio.Validator
	if c.TwilioAuthTokenFile != "" {
		s, err := readSecret("-twilio-auth-token-file", c.TwilioAuthTokenFile)
		if err != nil {
			return err
		}
		tw = twilio.NewValidator(twilio.Secret(s))
	}
	store := postgres.NewTracking(a.store.Pool())
	a.trackingTasks = append(a.trackingTasks, func(ctx context.Context) error { return pruneProviderEvents(ctx, store, logger) })
	tracker := delivery.NewTracker(key, store, a.audiences, pricing, events, logger)
	deliveryv1.RegisterTrackingServiceServer(srv, grpcapi.NewTrackingServer(tracker, sg, tw))
	return nil
}

// InboundSMSURL returns the URL to configure as a tenant's Twilio messaging service's incoming
// message webhook ("a message comes in"): the gateway's /webhooks/twilio/inbound with the tenant
// signed under c's tracking key, so an inbound STOP is applied to that tenant's contacts only.
func InboundSMSURL(c TrackingConfig, tenantID string) (string, error) {
	if c.KeyFile == "" {
		return "", fmt.Errorf("-tracking-key-file is required")
	}
	key, err := delivery.LoadTrackingKey(c.KeyFile, "")
	if err != nil {
		return "", err
	}
	u := delivery.TrackingLinks{BaseURL: c.PublicURL, Key: key}.InboundSMS(tenantID)
	if u == "" {
		return "", fmt.Errorf("tenant id %q: 1-%d printable characters", tenantID, delivery.MaxRefLen)
	}
	return u, nil
}

// pruneEvery is how often the dedup keys past delivery.ProviderEventRetention are deleted.
const pruneEvery = time.Hour

// pruneProviderEvents deletes, now and then every pruneEvery, the webhook dedup keys older than
// delivery.ProviderEventRetention, in bounded batches, until ctx ends. A failure is logged and
// retried at the next tick: keys kept longer do no harm.
func pruneProviderEvents(ctx context.Context, store *postgres.Tracking, logger *slog.Logger) error {
	const batch = 10000
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		for {
			n, err := store.PruneProviderEvents(ctx, time.Now().Add(-delivery.ProviderEventRetention), batch)
			if err != nil {
				if ctx.Err() == nil {
					logger.WarnContext(ctx, "prune provider events", "error", err)
				}
				break
			}
			if n < batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
