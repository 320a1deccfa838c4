// Package console is the web console: server-rendered pages under /console/ on the gateway's
// own origin. Every page is built from the public API called with the signed-in user's token,
// so the console shows and does exactly what that user's role allows and nothing more:
// authorization stays in the services, the console only hides what WhoAmI says the role
// lacks. The browser holds an HttpOnly session cookie (session.go), never a token; pages are
// html/template (contextual escaping of every user-supplied string), forms carry a CSRF token,
// and the only scripts are the console's own static files under a strict
// Content-Security-Policy (no inline script or style).
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// Prefix is where the console is served on the gateway.
const Prefix = "/console/"

// API is the public API the console calls; a nil client's screens say the service is not
// part of this deployment.
type API struct {
	Auth      authv1.AuthServiceClient
	Ingest    ingestv1.IngestServiceClient
	Campaigns campaignsv1.CampaignServiceClient
	Analytics analyticsv1.AnalyticsServiceClient
	DSR       dsrv1.DsrServiceClient
	Billing   billingv1.BillingServiceClient
}

// Config holds the console's settings.
type Config struct {
	// SessionKey seals the session cookies. Gateway replicas behind one address must share it;
	// empty: a random key per process (every session ends when the gateway restarts).
	SessionKey []byte
	// ClientIP returns the caller's address as the gateway sees it (for the services' audit
	// records and rate limits); nil: none is passed on.
	ClientIP func(context.Context) string
	// Health reports whether a mesh service ("ingest", "analytics", …) is serving, for the
	// overview; nil: health is not shown.
	Health func(ctx context.Context, service string) bool
	// RequestID returns the request's id (nil: none is passed on).
	RequestID func(context.Context) string
	Logger    *slog.Logger
}

// Console serves the pages.
type Console struct {
	cfg      Config
	api      API
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
	mux      *http.ServeMux
}

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// New builds the console.
func New(cfg Config, api API) (*Console, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ss, err := newSessions(cfg.SessionKey, api.Auth)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, api: api, sessions: ss, pages: pages,
		static: http.StripPrefix(Prefix+"static/", http.FileServerFS(sub)), mux: http.NewServeMux()}
	c.routes()
	return c, nil
}

// ServeHTTP implements http.Handler, with the console's security headers on every answer.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
	if strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		h.Set("Cache-Control", "no-cache")
		c.static.ServeHTTP(w, r)
		return
	}
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// request is one signed-in request: its session, who the caller is, and a context that
// carries the caller's token to the services.
type request struct {
	c    *Console
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	sess session
	who  *authv1.WhoAmIResponse
	// Path is the request's path, for the navigation's current item.
	Path string
}

// handler is a signed-in page or action.
type handler func(*request)

// signedIn wraps a page or action: no session (or an expired one) sends a page to the sign-in
// form and back; an action (POST) must carry its session's CSRF token and come from this
// origin.
func (c *Console) signedIn(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.sessions.load(r.Context(), w, r)
		if err != nil {
			clearCookie(w, sessionCookie)
			if r.Method == http.MethodGet && !isStream(r) {
				http.Redirect(w, r, Prefix+"signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "Your session has ended. Sign in again.", http.StatusUnauthorized)
			return
		}
		rq := &request{c: c, w: w, r: r, sess: s, Path: r.URL.Path}
		rq.ctx = c.outgoing(r.Context(), s.Access)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !sameOrigin(r) || !validCSRF(s, r.PostFormValue("csrf")) {
				rq.renderError(http.StatusForbidden, "This form has expired or did not come from the console. Reload the page and try again.")
				return
			}
		}
		who, err := c.api.Auth.WhoAmI(rq.ctx, &authv1.WhoAmIRequest{})
		if err != nil {
			if code := grpcCode(err); code == codeUnauthenticated {
				clearCookie(w, sessionCookie)
				http.Redirect(w, r, Prefix+"signin", http.StatusSeeOther)
				return
			}
			rq.fail(err)
			return
		}
		rq.who = who
		h(rq)
	}
}

// outgoing is the context of a call to the services on behalf of the session's user.
func (c *Console) outgoing(ctx context.Context, access string) context.Context {
	md := metadata.MD{}
	if access != "" {
		md.Set("authorization", "Bearer "+access)
	}
	if c.cfg.RequestID != nil {
		if id := c.cfg.RequestID(ctx); id != "" {
			md.Set("x-request-id", id)
		}
	}
	if c.cfg.ClientIP != nil {
		if ip := c.cfg.ClientIP(ctx); ip != "" {
			md.Set("x-forwarded-for", ip)
		}
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// sameOrigin reports whether a state-changing request came from a page of this origin
// (Sec-Fetch-Site, else Origin): SameSite=Strict already keeps the cookie off cross-site
// requests, this also refuses same-site siblings.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin"
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		return err == nil && u.Host == r.Host
	}
	return true // neither header: not a browser's cross-site request (they send Origin on POST)
}

func isStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// can reports whether the caller's role holds a permission.
func (rq *request) can(permission string) bool {
	return rq.who != nil && slices.Contains(rq.who.GetPermissions(), permission)
}

// need answers 403 unless the caller holds the permission; for pages (forms) that call no
// RPC until they are submitted. What the form then submits is authorized by the service.
func (rq *request) need(permission string) bool {
	if rq.can(permission) {
		return true
	}
	rq.renderError(http.StatusForbidden, "Your role does not allow this. Ask an administrator if you need it.")
	return false
}

// done redirects after a successful action, with a message for the next page.
func (rq *request) done(to, message string) {
	rq.c.sessions.setFlash(rq.w, flash{Kind: "ok", Text: message})
	http.Redirect(rq.w, rq.r, to, http.StatusSeeOther)
}

// doneWithSecret is done for an action whose result is shown exactly once.
func (rq *request) doneWithSecret(to, message, secret string) {
	rq.c.sessions.setFlash(rq.w, flash{Kind: "ok", Text: message, Secret: secret})
	http.Redirect(rq.w, rq.r, to, http.StatusSeeOther)
}

// now is the time used for defaults (date ranges, countdowns).
func (rq *request) now() time.Time { return time.Now() }

var errNoService = errors.New("service not configured")
