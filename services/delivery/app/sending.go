package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/campaignsclient"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
	deliveryprom "github.com/campaignmesh/campaignmesh/services/delivery/prometheus"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// SendingConfig is how the service sends campaigns: where campaigns' states come from, the
// providers (a channel without one is not sent), the per-tenant limits and the frequency cap.
// Secrets come only from files, so they never sit in a command line or an environment dump.
type SendingConfig struct {
	// CampaignsAddr is the campaigns service, polled for the active email and SMS campaigns.
	CampaignsAddr string
	// SendGridURL is SendGrid's origin (or a stand-in's); SendGridAPIKeyFile holds the API
	// key (email is sent only when set); SendGridFrom is the from address of an email whose
	// campaign content names no sender identity (optional: content always names one today).
	SendGridURL, SendGridAPIKeyFile, SendGridFrom string
	// TwilioURL is Twilio's origin (or a stand-in's); SMS is sent only when the account SID,
	// the auth token file and the messaging service SID are all set.
	TwilioURL, TwilioAccountSID, TwilioAuthTokenFile, TwilioMessagingServiceSID string
	// TwilioStatusCallback is where Twilio posts message statuses: the gateway's
	// /webhooks/twilio/status under the tracking's public URL (set by New when tracking is on).
	TwilioStatusCallback string
	// SendRate bounds a tenant's messages per second per channel (0: no limit);
	// SendConcurrency its provider calls in flight per channel.
	SendRate        float64
	SendConcurrency int
	// FrequencyCap bounds the messages per contact and channel within a window, across
	// campaigns (zero: none).
	FrequencyCap delivery.FrequencyCap
	// Lease is how long a recipient claimed for a send belongs to its sender: after a crash
	// its row is reconciled that long after the claim. Settle is how long after an attempt a
	// provider's "no such message" is believed (at least Lease, and longer than the provider's
	// indexing delay). DriveLease is how long a campaign stays a crashed replica's before
	// another one drives it. Zero: the domain's defaults.
	Lease, Settle, DriveLease time.Duration
	// CheckEvery is how often campaigns are listed: a paused campaign stops within about
	// twice that.
	CheckEvery time.Duration

	// Compose renders a recipient's message and Plans says whom a campaign sends to and
	// when: both come from the campaign's content. Until both are set nothing is sent.
	Compose func(ctx context.Context, r delivery.Recipient) (delivery.Message, error)
	Plans   delivery.SendPlans
	// Providers, when set, replaces the providers built from the settings above (tests).
	Providers map[delivery.Channel]delivery.Provider
	// Campaigns, when set, replaces the campaigns service (tests).
	Campaigns delivery.ActiveCampaigns
	// Tune, when set, makes last changes to each channel's sender configuration (tests:
	// leases and settle times of seconds).
	Tune func(delivery.Channel, *delivery.SenderConfig)
}

// DefaultSendingConfig returns the documented defaults: no provider, so nothing is sent.
func DefaultSendingConfig() SendingConfig {
	return SendingConfig{
		CampaignsAddr: "127.0.0.1:7103", SendGridURL: sendgrid.DefaultBaseURL, TwilioURL: twilio.DefaultBaseURL,
		SendConcurrency: delivery.DefaultConcurrency, CheckEvery: delivery.DefaultCheckEvery,
		Lease: delivery.DefaultLease, Settle: delivery.DefaultSettle, DriveLease: delivery.DefaultDriveLease,
	}
}

// readSecret reads a secret file, trimmed of surrounding white space. The error names the
// flag and the file, never the content.
func readSecret(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", flag, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("read %s: %s is empty", flag, path)
	}
	return s, nil
}

// providers builds the provider of each configured channel and logs once each channel that
// has none.
func (c SendingConfig) providers(logger *slog.Logger) (map[delivery.Channel]delivery.Provider, error) {
	if c.Providers != nil {
		return c.Providers, nil
	}
	out := map[delivery.Channel]delivery.Provider{}
	if c.SendGridAPIKeyFile != "" {
		key, err := readSecret("-sendgrid-api-key-file", c.SendGridAPIKeyFile)
		if err != nil {
			return nil, err
		}
		client, err := sendgrid.New(sendgrid.Config{BaseURL: c.SendGridURL, APIKey: sendgrid.Secret(key)})
		if err != nil {
			return nil, err
		}
		out[delivery.ChannelEmail] = sendgrid.NewProvider(client, sendgrid.ProviderConfig{From: sendgrid.Address{Email: c.SendGridFrom}})
	} else {
		logger.Info("sending: no email provider configured (-sendgrid-api-key-file): email campaigns are not sent")
	}
	if c.TwilioAccountSID != "" || c.TwilioAuthTokenFile != "" || c.TwilioMessagingServiceSID != "" {
		if c.TwilioAccountSID == "" || c.TwilioAuthTokenFile == "" || c.TwilioMessagingServiceSID == "" {
			return nil, errors.New("sending: -twilio-account-sid, -twilio-auth-token-file and -twilio-messaging-service-sid go together")
		}
		token, err := readSecret("-twilio-auth-token-file", c.TwilioAuthTokenFile)
		if err != nil {
			return nil, err
		}
		client, err := twilio.New(twilio.Config{BaseURL: c.TwilioURL, AccountSID: c.TwilioAccountSID, Password: twilio.Secret(token)})
		if err != nil {
			return nil, err
		}
		p, err := twilio.NewProvider(client, twilio.ProviderConfig{MessagingServiceSID: c.TwilioMessagingServiceSID, StatusCallback: c.TwilioStatusCallback})
		if err != nil {
			return nil, err
		}
		out[delivery.ChannelSMS] = p
	} else {
		logger.Info("sending: no SMS provider configured (-twilio-account-sid…): SMS campaigns are not sent")
	}
	return out, nil
}

// newOwner names this process in leases: unique per start, so a restarted process never
// finishes rows its predecessor claimed.
func newOwner() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// buildDispatcher returns the dispatcher of the configured channels, or nil when nothing can
// be sent (no provider, or no content source yet).
func (a *App) buildDispatcher(c SendingConfig, providers map[delivery.Channel]delivery.Provider, certs *mtls.Source, logger *slog.Logger) (*delivery.Dispatcher, error) {
	if len(providers) == 0 {
		return nil, nil
	}
	if c.Compose == nil {
		c.Compose = a.messages.Compose
	}
	if c.Plans == nil {
		c.Plans = a.messages
	}
	campaigns := c.Campaigns
	if campaigns == nil {
		client, conn, err := campaignsclient.Dial(c.CampaignsAddr, certs)
		if err != nil {
			return nil, err
		}
		a.OnClose(func() { conn.Close() })
		campaigns = client
	}
	metrics := deliveryprom.New(a.Registry())
	owner := newOwner()
	senders := map[delivery.Channel]delivery.SenderConfig{}
	for ch, p := range providers {
		sc := delivery.SenderConfig{
			Provider: p, Compose: c.Compose, Owner: owner, Concurrency: c.SendConcurrency,
			RatePerSecond: c.SendRate, Lease: c.Lease, Settle: c.Settle, Metrics: metrics.For(ch), Logger: logger,
		}
		if c.Tune != nil {
			c.Tune(ch, &sc)
		}
		senders[ch] = sc
	}
	return delivery.NewDispatcher(delivery.DispatcherConfig{
		Campaigns: campaigns, Plans: c.Plans, Audiences: a.audiences,
		Ledger: postgres.NewLedger(a.store.Pool()), Store: postgres.NewDispatch(a.store.Pool()),
		Owner: owner, DriveLease: c.DriveLease, CheckEvery: c.CheckEvery, FrequencyCap: c.FrequencyCap, Senders: senders, Logger: logger,
		Quotas: delivery.Quotas{View: a.quotas, Exceeded: a.quotaExceeded},
	})
}

// runDispatcher is the dispatcher as one of Run's tasks: its end at a stop is no failure.
func runDispatcher(d *delivery.Dispatcher) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := d.Run(ctx); ctx.Err() == nil {
			return err
		}
		return nil
	}
}
