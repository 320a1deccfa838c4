package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"golang.org/x/term"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// storedCredentials is the content of the credentials file that login writes.
type storedCredentials struct {
	// Addr is the gateway that issued the token; the token is only sent there.
	Addr        string    `json:"addr"`
	AccessToken string    `json:"access_token"`
	ExpireTime  time.Time `json:"expire_time"`
}

// expired reports whether the token has expired at now. A zero ExpireTime never expires
// locally; the server still checks.
func (c storedCredentials) expired(now time.Time) bool {
	return !c.ExpireTime.IsZero() && !now.Before(c.ExpireTime)
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

// accessToken returns the token to send: CMESH_TOKEN when set, else the stored one if it
// has not expired and was issued by the gateway at -addr.
func (a *app) accessToken() (string, error) {
	if token := strings.TrimSpace(a.getenv("CMESH_TOKEN")); token != "" {
		return token, nil
	}
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return "", err
	}
	c, err := loadCredentials(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", errors.New("not logged in; run cmesh login")
	case err != nil:
		return "", err
	case c.AccessToken == "":
		return "", fmt.Errorf("no access token in %s; run cmesh login", path)
	case c.expired(a.now()):
		return "", errors.New("session expired; run cmesh login")
	case c.Addr != "" && c.Addr != a.addr:
		// Never hand a bearer token to a server it was not issued by.
		return "", fmt.Errorf("the stored token is for %s, not %s; run cmesh -addr %s login, or pass -addr %s", c.Addr, a.addr, a.addr, c.Addr)
	}
	return c.AccessToken, nil
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
	var b []byte
	var err error
	if p.stdin {
		b, err = io.ReadAll(io.LimitReader(a.stdin, 64<<10))
	} else {
		b, err = os.ReadFile(p.file)
	}
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", errors.New("read password: empty password")
	}
	return pw, nil
}

// promptPassword reads a password: without echo from a terminal, else one line of stdin.
func (a *app) promptPassword(prompt string) (string, error) {
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(a.stderr, "%s: ", prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if len(b) == 0 {
			return "", errors.New("read password: empty password")
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if pw == "" {
		return "", errors.New("read password: empty password")
	}
	return pw, nil
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
	expire := resp.GetExpireTime().AsTime()
	if resp.GetExpireTime() == nil {
		expire = a.now().Add(time.Duration(resp.GetExpiresIn()) * time.Second)
	}
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return err
	}
	creds := storedCredentials{Addr: a.addr, AccessToken: resp.GetAccessToken(), ExpireTime: expire.UTC()}
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
		return writeJSON(a.stdout, map[string]string{
			"email":       req.Email,
			"tenant":      tenantName,
			"expire_time": formatTime(expire),
		})
	}
	_, err = fmt.Fprintf(a.stdout, "logged in as %s (tenant %s), token expires %s\n", req.Email, tenantName, formatTime(expire))
	return err
}

func runLogout(_ context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	path, err := credentialsPath(a.getenv)
	if err != nil {
		return err
	}
	err = os.Remove(path)
	deleted := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete credentials: %w", err)
	}
	if a.getenv("CMESH_TOKEN") != "" {
		fmt.Fprintln(a.stderr, "cmesh: note: CMESH_TOKEN is still set")
	}
	if a.output == "json" {
		return writeJSON(a.stdout, map[string]any{"credentials_file": path, "deleted": deleted})
	}
	if !deleted {
		_, err = fmt.Fprintf(a.stdout, "not logged in (no %s)\n", path)
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "logged out: deleted %s; the token stays valid on the server until it expires\n", path)
	return err
}

func runWhoAmI(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	return callOne(ctx, a, writeWhoAmI, func(ctx context.Context, client authv1.AuthServiceClient) (*authv1.WhoAmIResponse, error) {
		return client.WhoAmI(ctx, &authv1.WhoAmIRequest{})
	})
}
