package console

import (
	"net/http"
	"net/url"
	"strings"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// Sign-in limits: what the form accepts before asking auth (auth has its own rules).
const (
	maxTenantLen   = 128
	maxEmailLen    = 320
	maxPasswordLen = 1024
)

type signInForm struct {
	Tenant, Email, Next, Error string
}

func (c *Console) signInPage(w http.ResponseWriter, r *http.Request) {
	if _, err := c.sessions.load(r.Context(), w, r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.render(w, r, nil, http.StatusOK, "signin", "Sign in", signInForm{Tenant: r.URL.Query().Get("tenant"), Next: safeNext(r.URL.Query().Get("next"))})
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	form := signInForm{Tenant: strings.TrimSpace(r.PostFormValue("tenant")), Email: strings.TrimSpace(r.PostFormValue("email")),
		Next: safeNext(r.PostFormValue("next"))}
	password := r.PostFormValue("password")
	again := func(code int, msg string) {
		form.Error = msg
		c.render(w, r, nil, code, "signin", "Sign in", form)
	}
	if !sameOrigin(r) {
		again(http.StatusForbidden, "This form did not come from the console. Reload the page and try again.")
		return
	}
	if form.Email == "" || password == "" { // platform operators have no organization
		again(http.StatusBadRequest, "Enter your email and password (and your organization, unless you are a platform operator).")
		return
	}
	if len(form.Tenant) > maxTenantLen || len(form.Email) > maxEmailLen || len(password) > maxPasswordLen {
		again(http.StatusBadRequest, "One of the fields is too long.")
		return
	}
	tok, err := c.api.Auth.Login(c.outgoing(r.Context(), ""), &authv1.LoginRequest{Tenant: form.Tenant, Email: form.Email, Password: password})
	if err != nil {
		code, msg := explain(err)
		if code == http.StatusUnauthorized || code == http.StatusNotFound || code == http.StatusBadRequest {
			code, msg = http.StatusUnauthorized, "The organization, email or password is not right."
		}
		again(code, msg)
		return
	}
	if err := c.sessions.write(w, c.sessions.fromLogin(form.Tenant, form.Email, tok)); err != nil {
		again(http.StatusInternalServerError, "Signing in failed on our side. Try again.")
		return
	}
	http.Redirect(w, r, form.Next, http.StatusSeeOther)
}

// safeNext keeps a post-sign-in redirect inside the console (no open redirect).
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(u.Path, Prefix) || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "//") {
		return Prefix
	}
	return u.RequestURI()
}

func (c *Console) signOut(rq *request) {
	// The refresh token is revoked in auth (its access token then expires within minutes, and
	// revocations reach the services within seconds); the cookie is cleared either way.
	_, _ = c.api.Auth.Logout(rq.ctx, &authv1.LogoutRequest{RefreshToken: rq.sess.Refresh})
	clearCookie(rq.w, sessionCookie)
	http.Redirect(rq.w, rq.r, Prefix+"signin", http.StatusSeeOther)
}

func (c *Console) accountPage(rq *request) {
	rq.render("account", "Your account", nil)
}

func (c *Console) changePassword(rq *request) {
	current, next, again := rq.r.PostFormValue("current"), rq.r.PostFormValue("new"), rq.r.PostFormValue("again")
	switch {
	case current == "" || next == "":
		rq.renderError(http.StatusBadRequest, "Enter your current password and the new one.")
		return
	case next != again:
		rq.renderError(http.StatusBadRequest, "The new password and its repetition differ.")
		return
	case len(current) > maxPasswordLen || len(next) > maxPasswordLen:
		rq.renderError(http.StatusBadRequest, "The password is too long.")
		return
	}
	if _, err := c.api.Auth.ChangePassword(rq.ctx, &authv1.ChangePasswordRequest{CurrentPassword: current, NewPassword: next}); err != nil {
		rq.fail(err)
		return
	}
	// Auth ends all the user's sessions when the password changes, this one too.
	clearCookie(rq.w, sessionCookie)
	rq.done(Prefix+"signin", "Your password was changed and your sessions were ended. Sign in with the new password.")
}
