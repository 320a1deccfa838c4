package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// storedCredentials is the content of the credentials file that login writes.
type storedCredentials struct {
	// Addr is the gateway that issued the tokens; they are only sent there.
	Addr        string    `json:"addr"`
	AccessToken string    `json:"access_token"`
	ExpireTime  time.Time `json:"expire_time"`
	// RefreshToken renews the access token; the server accepts each one once.
	RefreshToken      string    `json:"refresh_token,omitempty"`
	RefreshExpireTime time.Time `json:"refresh_expire_time,omitzero"`
}

// refreshMargin is how long before its expiry an access token is renewed, so that it does
// not expire in flight or on a server whose clock runs ahead.
const refreshMargin = 30 * time.Second

// accessValid reports whether the access token is still valid for margin after now. A zero
// ExpireTime never expires locally; the server still checks.
func (c storedCredentials) accessValid(now time.Time, margin time.Duration) bool {
	return c.AccessToken != "" && (c.ExpireTime.IsZero() || now.Add(margin).Before(c.ExpireTime))
}

// refreshValid reports whether the refresh token can still be used at now. A zero
// RefreshExpireTime is unknown: the server decides.
func (c storedCredentials) refreshValid(now time.Time) bool {
	return c.RefreshToken != "" && (c.RefreshExpireTime.IsZero() || now.Before(c.RefreshExpireTime))
}

// tokenPlan says where the access token for a call comes from.
type tokenPlan int

const (
	planLogin   tokenPlan = iota // nothing usable: log in again
	planEnv                      // CMESH_TOKEN, sent as is and never refreshed
	planStored                   // the stored access token
	planRefresh                  // renew the stored tokens with Refresh first
)

func (p tokenPlan) String() string {
	return [...]string{"login", "env", "stored", "refresh"}[p]
}

// planToken decides how to authenticate a call at now, given CMESH_TOKEN and the stored
// credentials (nil when there are none). An access token about to expire is renewed when
// the refresh token allows; without one it is used until it actually expires.
func planToken(envToken string, c *storedCredentials, now time.Time) tokenPlan {
	switch {
	case envToken != "":
		return planEnv
	case c == nil:
		return planLogin
	case c.accessValid(now, refreshMargin):
		return planStored
	case c.refreshValid(now):
		return planRefresh
	case c.accessValid(now, 0):
		return planStored
	}
	return planLogin
}

// credentialsFrom makes the credentials to store from a Login or Refresh response.
func credentialsFrom(addr string, resp *authv1.LoginResponse, now time.Time) storedCredentials {
	expire := resp.GetExpireTime().AsTime()
	if resp.GetExpireTime() == nil {
		expire = now.Add(time.Duration(resp.GetExpiresIn()) * time.Second)
	}
	c := storedCredentials{
		Addr:         addr,
		AccessToken:  resp.GetAccessToken(),
		ExpireTime:   expire.UTC(),
		RefreshToken: resp.GetRefreshToken(),
	}
	if resp.GetRefreshExpireTime() != nil {
		c.RefreshExpireTime = resp.GetRefreshExpireTime().AsTime().UTC()
	}
	return c
}

// credentialsPath returns CMESH_CREDENTIALS, else $XDG_CONFIG_HOME/cmesh/credentials.json,
// else ~/.config/cmesh/credentials.json.
func credentialsPath(getenv func(string) string) (string, error) {
	if p := getenv("CMESH_CREDENTIALS"); p != "" {
		return p, nil
	}
	if dir := getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "cmesh", "credentials.json"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("locate credentials file: %w", err)
		}
	}
	return filepath.Join(home, ".config", "cmesh", "credentials.json"), nil
}

// loadCredentials reads the credentials file; a missing file is fs.ErrNotExist.
func loadCredentials(path string) (storedCredentials, error) {
	var c storedCredentials
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read credentials: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parse credentials %s: %w", path, err)
	}
	return c, nil
}

// saveCredentials writes c to path with mode 0600, creating its directory with mode 0700.
// It writes a temporary file and renames it, so a crash never leaves half a file and an
// existing file with looser permissions is replaced rather than rewritten.
func saveCredentials(path string, c storedCredentials) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create credentials directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".credentials-*.json") // mode 0600
	if err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	return nil
}

// removeCredentials deletes the credentials file and reports whether there was one.
func removeCredentials(path string) (bool, error) {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete credentials: %w", err)
	}
	return true, nil
}

var (
	errNotLoggedIn     = errors.New("not logged in; run cmesh login")
	errSessionExpired  = errors.New("session expired; run cmesh login")
	errCredentialsLost = errors.New("the credentials file was deleted meanwhile; run cmesh login")
)

// accessToken returns the token to send: CMESH_TOKEN when set, else the stored one if it
// was issued by the gateway at -addr, renewed first when it expires within refreshMargin.
func (a *app) accessToken(ctx context.Context) (string, error) {
	env := strings.TrimSpace(a.getenv("CMESH_TOKEN"))
	if env != "" {
		return env, nil
	}
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return "", err
	}
	c, err := loadCredentials(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", errNotLoggedIn
	case err != nil:
		return "", err
	}
	if err := a.checkAddr(c); err != nil {
		return "", err
	}
	switch planToken(env, &c, a.now()) {
	case planStored:
		return c.AccessToken, nil
	case planRefresh:
		return a.refresh(ctx, path)
	}
	if c.AccessToken == "" && c.RefreshToken == "" {
		return "", fmt.Errorf("no access token in %s; run cmesh login", path)
	}
	return "", errSessionExpired
}

// checkAddr refuses credentials issued by another gateway than -addr: a bearer token is
// never handed to a server it was not issued by.
func (a *app) checkAddr(c storedCredentials) error {
	if c.Addr != "" && c.Addr != a.addr {
		return fmt.Errorf("the stored token is for %s, not %s; run cmesh -addr %s login, or pass -addr %s", c.Addr, a.addr, a.addr, c.Addr)
	}
	return nil
}

// refresh renews the stored tokens with Refresh, stores the new pair and returns the new
// access token. The server accepts a refresh token once and ends the whole session when it
// sees one again, so refresh holds the credentials lock and re-reads the file under it:
// another cmesh may have renewed the tokens meanwhile. When the server rejects the refresh
// token, the stored tokens are useless and are deleted.
func (a *app) refresh(ctx context.Context, path string) (string, error) {
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	unlock, err := lockFile(ctx, path+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	c, err := loadCredentials(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", errCredentialsLost
	case err != nil:
		return "", err
	}
	if err := a.checkAddr(c); err != nil {
		return "", err
	}
	switch planToken("", &c, a.now()) {
	case planStored:
		return c.AccessToken, nil // renewed by another cmesh
	case planLogin:
		return "", errSessionExpired
	}
	client, err := a.authClient()
	if err != nil {
		return "", err
	}
	resp, err := client.Refresh(ctx, &authv1.RefreshRequest{RefreshToken: c.RefreshToken})
	if status.Code(err) == codes.Unauthenticated {
		if _, err := removeCredentials(path); err != nil {
			return "", err
		}
		return "", errSessionExpired
	}
	if err != nil {
		return "", fmt.Errorf("renew session: %w", err)
	}
	renewed := credentialsFrom(a.addr, resp, a.now())
	if err := saveCredentials(path, renewed); err != nil {
		return "", fmt.Errorf("store renewed session: %w", err)
	}
	return renewed.AccessToken, nil
}

// passwordFlags are the ways to pass a password without putting it on the command line.
type passwordFlags struct {
	stdin bool
	file  string
}

func (p *passwordFlags) register(c *cmdline) {
	c.BoolVar(&p.stdin, "password-stdin", false, "read the password from stdin")
	c.StringVar(&p.file, "password-file", "", "read the password from `file`")
}

func (p *passwordFlags) given() bool { return p.stdin || p.file != "" }

// read returns the password from stdin or the file, without the trailing newline.
func (p *passwordFlags) read(a *app) (string, error) {
	if !p.stdin {
		return readPasswordFile(p.file)
	}
	b, err := io.ReadAll(io.LimitReader(a.stdin, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return checkPassword(string(b))
}

// readPasswordFile returns the content of a password file without the trailing newline.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return checkPassword(string(b))
}

// checkPassword strips the line ending from s and refuses an empty password.
func checkPassword(s string) (string, error) {
	pw := strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
	if pw == "" {
		return "", errors.New("read password: empty password")
	}
	return pw, nil
}

// stdinTerminal returns stdin's file descriptor when stdin is a terminal.
func (a *app) stdinTerminal() (int, bool) {
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// promptPassword reads a password: without echo from a terminal, else one line of stdin.
func (a *app) promptPassword(prompt string) (string, error) {
	fd, ok := a.stdinTerminal()
	if !ok {
		return a.readLine()
	}
	fmt.Fprintf(a.stderr, "%s: ", prompt)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(a.stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return checkPassword(string(b))
}

// readLine reads the next line of stdin as a password. One buffered reader serves every
// call, so that consecutive lines are not lost to a previous reader's buffer.
func (a *app) readLine() (string, error) {
	if a.stdinLines == nil {
		a.stdinLines = bufio.NewReader(a.stdin)
	}
	line, err := a.stdinLines.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	return checkPassword(line)
}

func runLogin(ctx context.Context, a *app, c *cmdline) error {
	var (
		tenant, email, file string
		pw                  passwordFlags
	)
	c.StringVar(&tenant, "tenant", "", "tenant `slug`; empty for platform operators")
	c.StringVar(&email, "email", "", "`email` to log in with")
	c.StringVar(&file, "f", "", "JSON `file` with a LoginRequest (tenant, email, password)")
	pw.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if pw.stdin && pw.file != "" {
		return c.usageErr("-password-stdin and -password-file are exclusive")
	}
	req := &authv1.LoginRequest{}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read login request: %w", err)
		}
		// Tolerate extra fields: bootstrap files may carry more than the request.
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, req); err != nil {
			return fmt.Errorf("parse login request %s: %w", file, err)
		}
	}
	c.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "tenant":
			req.Tenant = tenant
		case "email":
			req.Email = email
		}
	})
	if req.Email == "" {
		return c.usageErr("-email is required")
	}
	var err error
	switch {
	case pw.given():
		req.Password, err = pw.read(a)
	case req.Password == "":
		req.Password, err = a.promptPassword("password for " + req.Email)
	}
	if err != nil {
		return err
	}

	ctx, client, err := a.connect(ctx, false)
	if err != nil {
		return err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := client.Login(ctx, req)
	if err != nil {
		return err
	}
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return err
	}
	creds := credentialsFrom(a.addr, resp, a.now())
	if err := saveCredentials(path, creds); err != nil {
		return err
	}
	if a.getenv("CMESH_TOKEN") != "" {
		fmt.Fprintln(a.stderr, "cmesh: note: CMESH_TOKEN is set and overrides the stored token")
	}
	tenantName := req.Tenant
	if tenantName == "" {
		tenantName = "platform"
	}
	if a.output == "json" {
		out := map[string]string{
			"email":       req.Email,
			"tenant":      tenantName,
			"expire_time": formatTime(creds.ExpireTime),
		}
		if !creds.RefreshExpireTime.IsZero() {
			out["refresh_expire_time"] = formatTime(creds.RefreshExpireTime)
		}
		return writeJSON(a.stdout, out)
	}
	msg := fmt.Sprintf("logged in as %s (tenant %s), token expires %s", req.Email, tenantName, formatTime(creds.ExpireTime))
	if !creds.RefreshExpireTime.IsZero() {
		msg += ", session renewable until " + formatTime(creds.RefreshExpireTime)
	}
	_, err = fmt.Fprintln(a.stdout, msg)
	return err
}

func runLogout(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return err
	}
	// Hold the lock, so that a cmesh renewing the session meanwhile cannot store the tokens
	// again after they are deleted. No directory means no credentials: nothing to lock.
	lctx, cancel := a.callContext(ctx)
	defer cancel()
	unlock, err := lockFile(lctx, path+".lock")
	switch {
	case err == nil:
		defer unlock()
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	ended, endErr := a.endSession(ctx, path)
	deleted, err := removeCredentials(path)
	if err != nil {
		return err
	}
	if a.getenv("CMESH_TOKEN") != "" {
		fmt.Fprintln(a.stderr, "cmesh: note: CMESH_TOKEN is still set")
	}
	if a.output == "json" {
		if err := writeJSON(a.stdout, map[string]any{"credentials_file": path, "deleted": deleted, "session_ended": ended}); err != nil {
			return err
		}
	} else {
		var msg string
		switch {
		case !deleted:
			msg = fmt.Sprintf("not logged in (no %s)", path)
		case ended:
			msg = fmt.Sprintf("logged out: ended the session and deleted %s", path)
		default:
			msg = fmt.Sprintf("logged out: deleted %s", path)
		}
		if _, err := fmt.Fprintln(a.stdout, msg); err != nil {
			return err
		}
	}
	if endErr != nil {
		fmt.Fprintln(a.stderr, "cmesh: could not end the session on the server; it stays valid until its refresh token expires")
	}
	return endErr
}

// endSession ends the stored session on the server with Logout and reports whether it did.
// The server's refusal (an unknown or expired refresh token) is no error: there is no
// session to end. Only an error that leaves the session possibly alive is returned: the
// gateway could not be reached or did not answer.
func (a *app) endSession(ctx context.Context, path string) (bool, error) {
	c, err := loadCredentials(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		// A file that cannot be read has no session to end; logout deletes it.
		fmt.Fprintf(a.stderr, "cmesh: note: %v\n", err)
		return false, nil
	case c.RefreshToken == "":
		return false, nil
	case a.checkAddr(c) != nil:
		fmt.Fprintf(a.stderr, "cmesh: note: the session is on %s, not %s; not ending it\n", c.Addr, a.addr)
		return false, nil
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	client, err := a.authClient()
	if err != nil {
		return false, err
	}
	_, err = client.Logout(ctx, &authv1.LogoutRequest{RefreshToken: c.RefreshToken})
	switch {
	case err == nil:
		return true, nil
	case unreachable(err):
		return false, fmt.Errorf("end session: %w", err)
	}
	return false, nil
}

// unreachable reports whether err says the gateway was not reached or did not answer, as
// opposed to the server refusing the call.
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.Unknown:
		// Not a gRPC status: a local error, such as an unreadable CA certificate.
		_, ok := status.FromError(err)
		return !ok
	}
	return false
}

func runWhoAmI(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callOne(ctx, a, writeWhoAmI, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.WhoAmIResponse, error) {
		return client.WhoAmI(ctx, &authv1.WhoAmIRequest{})
	})
}
