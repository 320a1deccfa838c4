// Command cmesh is the command-line client for the CampaignMesh edge gateway. It logs in,
// keeps the access token in a credentials file and calls the AuthService over TLS.
//
// Run "cmesh help" for the commands.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

const (
	defaultAddr    = "localhost:8443"
	defaultCACert  = ".state/certs/ca.pem"
	defaultTimeout = 10 * time.Second
)

// commands is the command tree; dispatch and help are driven by it.
var commands = []*command{
	{
		name:    "login",
		summary: "log in and store the session",
		details: `Platform operators leave -tenant empty. Without -password-stdin or -password-file
the password is read from the terminal (or the first line of stdin). -f reads a
LoginRequest as JSON, e.g. {"tenant":"acme","email":"...","password":"..."} as written
by the dev bootstrap to .state/bootstrap/*.json; flags override its fields.

The access token and the refresh token are stored in the credentials file (mode 0600).
Each command renews an access token that has expired or expires within 30s with the
refresh token, until the refresh token expires; then run cmesh login again.`,
		run: runLogin,
	},
	{
		name:    "logout",
		summary: "end the session and delete the stored tokens",
		details: `The server ends the session of the stored refresh token; the local credentials file
is deleted even when the server cannot be reached. An access token already issued
stays valid on the server until it expires (minutes).`,
		run: runLogout,
	},
	{name: "whoami", summary: "describe the credential in use", run: runWhoAmI},
	{
		name:    "password",
		summary: "change your password and end all your sessions",
		details: `Without flags both passwords are read from the terminal without echo (the new one
twice), or from the first two lines of stdin when it is not a terminal. -stdin reads
the current password from the first line and the new one from the second.

The server ends every session of yours, so the stored tokens are deleted: run
cmesh login again with the new password.`,
		run: runPassword,
	},
	{name: "roles", summary: "list the roles and the permissions each holds", run: runRoles},
	{name: "tenants", summary: "manage tenants (platform operators)", subs: tenantCommands},
	{name: "users", summary: "manage the users of your tenant", subs: userCommands},
	{name: "apikeys", summary: "manage the API keys of your tenant", subs: apiKeyCommands},
	{name: "invitations", summary: "invite people to a tenant; accept an invitation", subs: invitationCommands},
	{name: "audit", summary: "read and verify your tenant's audit log", subs: auditCommands},
	{name: "campaigns", summary: "manage your tenant's campaigns and their lifecycle", subs: campaignCommands},
	{name: "metrics", summary: "query campaign metrics: summary, series, breakdown, funnel, live", subs: metricsCommands},
	{name: "events", summary: "follow your tenant's events: tail (the live event debugger)", subs: eventCommands},
	{name: "dsr", summary: "data-subject requests (GDPR/CCPA): erasure, access, suppression, receipts", subs: dsrCommands},
	{name: "plan", summary: "a tenant's plan: its limits per meter (quotas)", subs: planCommands},
	{name: "privacy", summary: "your tenant's privacy policy: retention, property rules, IP and user agent", subs: privacyCommands},
	{name: "usage", summary: "metered usage and its reconciliation with Stripe", subs: append(usageCommands, usageReconcileCommand)},
	{name: "billing", summary: "billing: tenants' Stripe accounts and standing", subs: billingCommands},
	{
		name:    "signing-keys",
		aliases: []string{"keys"},
		summary: "list and rotate the keys that sign access tokens",
		subs:    signingKeyCommands,
	},
}

// command is a node of the command tree: a group with subcommands, or a leaf that runs.
type command struct {
	name    string
	aliases []string // other names dispatch accepts, e.g. a group's old name
	args    string   // positional arguments, e.g. "ID ROLE"; parse checks their count
	summary string
	details string
	run     func(ctx context.Context, a *app, c *cmdline) error
	subs    []*command
}

// app holds the global flags and the process's environment, so tests can run commands
// without touching the real one.
type app struct {
	stdin      io.Reader
	stdinLines *bufio.Reader // stdin, buffered by the first readLine
	stdout     io.Writer
	stderr     io.Writer
	getenv     func(string) string
	now        func() time.Time
	// dial connects to the gateway; tests replace it with a fake client.
	dial func(a *app) (authv1.AuthServiceClient, io.Closer, error)

	addr      string
	cacert    string
	cacertSet bool // -cacert or CMESH_CACERT given: a missing file is an error
	output    string
	timeout   time.Duration

	client    authv1.AuthServiceClient
	conn      io.Closer
	sentToken bool   // a call carried the access token
	requestID string // idempotency key of a create call sent, for the retry hint
}

func main() {
	a := &app{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		now:    time.Now,
		dial:   dialGateway,
	}
	os.Exit(a.run(context.Background(), os.Args[1:]))
}

// run runs the command line args and returns the exit code: 0 on success or help, 1 when
// the command failed, 2 when the command line is wrong.
func (a *app) run(ctx context.Context, args []string) int {
	err := a.dispatch(ctx, args)
	if a.conn != nil {
		a.conn.Close()
	}
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "cmesh: %s\n\n", ue.msg)
		ue.usage(a.stderr)
		return 2
	case errors.Is(err, errReported):
		return 1
	}
	printError(a.stderr, err, a.sentToken)
	if a.requestID != "" && maybeDone(err) {
		fmt.Fprintf(a.stderr, "hint: the server may have done it; repeat the command with -request-id %s to get its result instead of doing it twice\n", a.requestID)
	}
	return 1
}

// errReported ends a command that has printed its own failure, e.g. a broken audit chain,
// with exit code 1 and nothing more on stderr.
var errReported = errors.New("failure reported")

// maybeDone reports whether a call that failed with err may still have taken effect on the
// server: the answer was lost, not refused.
func maybeDone(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// usageError is a mistake on the command line; run prints it with the relevant usage.
type usageError struct {
	msg   string
	usage func(w io.Writer)
}

func (e *usageError) Error() string { return e.msg }

func (a *app) dispatch(ctx context.Context, args []string) error {
	gfs := flag.NewFlagSet("cmesh", flag.ContinueOnError)
	gfs.SetOutput(io.Discard) // usage and errors are printed by run, to the right stream
	gfs.StringVar(&a.addr, "addr", envOr(a.getenv, "CMESH_ADDR", defaultAddr), "gateway `host:port` (env CMESH_ADDR)")
	gfs.StringVar(&a.cacert, "cacert", envOr(a.getenv, "CMESH_CACERT", defaultCACert), "PEM `file` of the CA that signs the gateway certificate (env CMESH_CACERT); when the default file is missing, system roots are used")
	gfs.StringVar(&a.output, "o", "table", "output `format`: table or json")
	gfs.DurationVar(&a.timeout, "timeout", defaultTimeout, "deadline of each call")
	usage := func(w io.Writer) { topUsage(w, gfs) }
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(a.stdout)
			return err
		}
		return &usageError{msg: err.Error(), usage: usage}
	}
	gfs.Visit(func(f *flag.Flag) { a.cacertSet = a.cacertSet || f.Name == "cacert" })
	a.cacertSet = a.cacertSet || a.getenv("CMESH_CACERT") != ""
	if a.output != "table" && a.output != "json" {
		return &usageError{msg: fmt.Sprintf("-o %s: want table or json", a.output), usage: usage}
	}
	if a.timeout <= 0 {
		return &usageError{msg: "-timeout must be positive", usage: usage}
	}

	args = gfs.Args()
	if len(args) == 0 {
		return &usageError{msg: "missing command", usage: usage}
	}
	if args[0] == "help" {
		if len(args) == 1 {
			usage(a.stdout)
			return nil
		}
		// "help tenants list" is "tenants list -h": only the command itself knows its flags.
		args = append(slices.Clone(args[1:]), "-h")
	}
	cmds, path := commands, []string(nil)
	for {
		i := slices.IndexFunc(cmds, func(c *command) bool { return c.name == args[0] || slices.Contains(c.aliases, args[0]) })
		if i < 0 {
			return &usageError{msg: fmt.Sprintf("unknown command %q", strings.Join(append(path, args[0]), " ")), usage: usage}
		}
		cmd := cmds[i]
		path, args = append(path, cmd.name), args[1:]
		if cmd.subs == nil {
			c := newCmdline(cmd, strings.Join(path, " "), args)
			return cmd.run(ctx, a, c)
		}
		group := strings.Join(path, " ")
		usage = func(w io.Writer) { groupUsage(w, group, cmd) }
		if len(args) == 0 {
			return &usageError{msg: fmt.Sprintf("%s: missing subcommand", cmd.name), usage: usage}
		}
		if slices.Contains([]string{"-h", "-help", "--help", "help"}, args[0]) {
			usage(a.stdout)
			return flag.ErrHelp
		}
		cmds = cmd.subs
	}
}

// cmdline is one leaf command's flags and arguments as typed.
type cmdline struct {
	*flag.FlagSet
	cmd  *command
	path string // e.g. "tenants list"
	args []string
}

func newCmdline(cmd *command, path string, args []string) *cmdline {
	fs := flag.NewFlagSet("cmesh "+path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &cmdline{FlagSet: fs, cmd: cmd, path: path, args: args}
}

// parse parses the flags the command has defined and returns the positional arguments,
// exactly as many as the command's synopsis names. On -h it prints the usage to stdout
// and returns flag.ErrHelp.
func (c *cmdline) parse(a *app) ([]string, error) {
	if err := c.Parse(c.args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(a.stdout)
			return nil, err
		}
		return nil, c.usageErr(err.Error())
	}
	want := strings.Fields(c.cmd.args)
	required := 0 // the arguments not in brackets; "[VALUE]" is optional
	for _, w := range want {
		if !strings.HasPrefix(w, "[") {
			required++
		}
	}
	if c.NArg() < required || c.NArg() > len(want) {
		if len(want) == 0 {
			return nil, c.usageErr(fmt.Sprintf("%s: unexpected argument %q", c.path, c.Arg(0)))
		}
		return nil, c.usageErr(fmt.Sprintf("%s: want %s, got %d argument(s)", c.path, strings.Join(want, " "), c.NArg()))
	}
	return c.Args(), nil
}

// usageErr reports a command-line mistake along with this command's usage.
func (c *cmdline) usageErr(msg string) error {
	return &usageError{msg: msg, usage: c.usage}
}

func (c *cmdline) usage(w io.Writer) {
	synopsis := "cmesh [global flags] " + c.path
	hasFlags := false
	c.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		synopsis += " [flags]"
	}
	if c.cmd.args != "" {
		synopsis += " " + c.cmd.args
	}
	fmt.Fprintf(w, "usage: %s\n\n%s.\n", synopsis, capitalize(c.cmd.summary))
	if c.cmd.details != "" {
		fmt.Fprintf(w, "\n%s\n", c.cmd.details)
	}
	if hasFlags {
		fmt.Fprint(w, "\nflags:\n")
		c.SetOutput(w)
		c.PrintDefaults()
		c.SetOutput(io.Discard)
	}
}

func topUsage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprint(w, `cmesh is the command-line client for the CampaignMesh edge gateway.

usage: cmesh [global flags] <command> [flags] [args]

commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var list func(path string, cmds []*command)
	list = func(path string, cmds []*command) {
		for _, c := range cmds {
			if c.subs == nil {
				fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(path+c.name+" "+c.args), c.summary)
			} else {
				list(path+c.name+" ", c.subs)
			}
		}
	}
	list("", commands)
	fmt.Fprintf(tw, "  help [command]\tshow help for a command (same as: cmesh <command> -h)\n")
	tw.Flush()
	fmt.Fprint(w, "\nglobal flags (before the command):\n")
	global.SetOutput(w)
	global.PrintDefaults()
	global.SetOutput(io.Discard)
	fmt.Fprint(w, `
environment:
  CMESH_ADDR, CMESH_CACERT  defaults for -addr and -cacert
  CMESH_CREDENTIALS         credentials file (default $XDG_CONFIG_HOME/cmesh/credentials.json,
                            else ~/.config/cmesh/credentials.json)
  CMESH_TOKEN               access token to send instead of the stored one (for scripts);
                            it is never refreshed
`)
}

func groupUsage(w io.Writer, path string, group *command) {
	fmt.Fprintf(w, "usage: cmesh [global flags] %s <command> [flags] [args]\n\n%s.\n", path, capitalize(group.summary))
	if len(group.aliases) > 0 {
		fmt.Fprintf(w, "Also called: %s.\n", strings.Join(group.aliases, ", "))
	}
	fmt.Fprint(w, "\ncommands:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range group.subs {
		fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(s.name+" "+s.args), s.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun \"cmesh %s <command> -h\" for a command's flags.\n", path)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// connect returns the AuthService client, dialling the gateway on first use. With auth,
// the returned context also carries the caller's access token, renewed first if needed.
func (a *app) connect(ctx context.Context, auth bool) (context.Context, authv1.AuthServiceClient, error) {
	if auth {
		token, err := a.accessToken(ctx)
		if err != nil {
			return nil, nil, err
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		a.sentToken = true
	}
	client, err := a.authClient()
	if err != nil {
		return nil, nil, err
	}
	return ctx, client, nil
}

// authClient returns the AuthService client, dialling the gateway on first use.
func (a *app) authClient() (authv1.AuthServiceClient, error) {
	if a.client == nil {
		client, conn, err := a.dial(a)
		if err != nil {
			return nil, err
		}
		a.client, a.conn = client, conn
	}
	return a.client, nil
}

// dialGateway opens a TLS client connection to the gateway. grpc.NewClient connects
// lazily, so connection errors surface from the first call as Unavailable.
func dialGateway(a *app) (authv1.AuthServiceClient, io.Closer, error) {
	conf, err := a.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(a.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithUserAgent("cmesh"),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", a.addr, err)
	}
	return authv1.NewAuthServiceClient(conn), conn, nil
}

// tlsConfig trusts the -cacert CA only, or the system roots when the default CA file
// does not exist (a gateway with a public certificate).
func (a *app) tlsConfig() (*tls.Config, error) {
	host, _, err := net.SplitHostPort(a.addr)
	if err != nil {
		host = a.addr // no port
	}
	conf := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	pem, err := os.ReadFile(a.cacert)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !a.cacertSet:
		return conf, nil
	case err != nil:
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA certificate %s: no PEM certificate found", a.cacert)
	}
	conf.RootCAs = pool
	return conf, nil
}

// callContext bounds one RPC by -timeout.
func (a *app) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// listFlags are the paging flags of the list commands.
type listFlags struct {
	pageSize  int
	pageToken string
	all       bool
}

func (l *listFlags) register(c *cmdline) {
	c.IntVar(&l.pageSize, "page-size", 0, "at most `n` results per page (server default 50, max 1000)")
	c.StringVar(&l.pageToken, "page-token", "", "continue from a previous page's next_page_token")
	c.BoolVar(&l.all, "all", false, "fetch every page")
}

func (l *listFlags) check(c *cmdline) error {
	if l.pageSize < 0 || l.pageSize > math.MaxInt32 {
		return c.usageErr(fmt.Sprintf("-page-size %d is out of range", l.pageSize))
	}
	return nil
}

// listPages calls fetch for one page, or with -all for every page, and returns the items
// and the token of the next page (empty with -all). Each call gets its own -timeout.
func listPages[T any](ctx context.Context, a *app, l *listFlags, fetch func(ctx context.Context, token string) ([]T, string, error)) ([]T, string, error) {
	var all []T
	token := l.pageToken
	for {
		cctx, cancel := a.callContext(ctx)
		items, next, err := fetch(cctx, token)
		cancel()
		if err != nil {
			return nil, "", err
		}
		all = append(all, items...)
		if !l.all || next == "" {
			return all, next, nil
		}
		if next == token {
			return nil, "", fmt.Errorf("list: server returned the same page token %q twice", next)
		}
		token = next
	}
}

// notePage tells the person at the terminal that a table shows only one page; JSON output
// carries next_page_token itself.
// listCommand is the shape of every paged list command: list flags, then pages fetched with
// fetch, printed as one response (wrap) or a table.
func listCommand[T any](
	fetch func(ctx context.Context, client authv1.AuthServiceClient, size int32, token string) ([]T, string, error),
	wrap func(items []T, next string) proto.Message,
	table func(io.Writer, []T) error,
) func(context.Context, *app, *cmdline) error {
	return func(ctx context.Context, a *app, c *cmdline) error {
		var l listFlags
		l.register(c)
		if _, err := c.parse(a); err != nil {
			return err
		}
		if err := l.check(c); err != nil {
			return err
		}
		ctx, client, err := a.connect(ctx, true)
		if err != nil {
			return err
		}
		items, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]T, string, error) {
			return fetch(ctx, client, int32(l.pageSize), token)
		})
		if err != nil {
			return err
		}
		if err := a.emit(wrap(items, next), func(w io.Writer) error { return table(w, items) }); err != nil {
			return err
		}
		a.notePage(next)
		return nil
	}
}

func (a *app) notePage(next string) {
	if next != "" && a.output != "json" {
		fmt.Fprintf(a.stderr, "more results: use -all, or -page-token %s\n", next)
	}
}

// serviceClient returns a client of any mesh service on the gateway connection (the gateway
// routes every service by its proto package), and ctx with the caller's access token, renewed
// first if needed.
func serviceClient[C any](ctx context.Context, a *app, newClient func(grpc.ClientConnInterface) C) (context.Context, C, error) {
	var none C
	ctx, _, err := a.connect(ctx, true)
	if err != nil {
		return nil, none, err
	}
	cc, ok := a.conn.(grpc.ClientConnInterface)
	if !ok {
		return nil, none, fmt.Errorf("connection to %s cannot carry calls of other services", a.addr)
	}
	return ctx, newClient(cc), nil
}

// callService makes one call of a mesh service's client within -timeout and prints its result,
// as table writes it or as JSON.
func callService[C any, M proto.Message](ctx context.Context, a *app, newClient func(grpc.ClientConnInterface) C, table func(io.Writer, M) error, call func(context.Context, C) (M, error)) error {
	ctx, client, err := serviceClient(ctx, a, newClient)
	if err != nil {
		return err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	m, err := call(ctx, client)
	if err != nil {
		return err
	}
	return a.emit(m, func(w io.Writer) error { return table(w, m) })
}

// callOne makes one authenticated call and prints its result, as table writes it or as JSON.
func callOne[M proto.Message](ctx context.Context, a *app, table func(io.Writer, M) error, call func(context.Context, authv1.AuthServiceClient) (M, error)) error {
	ctx, client, err := a.connect(ctx, true)
	if err != nil {
		return err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	m, err := call(ctx, client)
	if err != nil {
		return err
	}
	return a.emit(m, func(w io.Writer) error { return table(w, m) })
}

// requestIDFlag is the -request-id flag of the commands that create something.
type requestIDFlag struct{ id string }

func (r *requestIDFlag) register(c *cmdline) {
	c.StringVar(&r.id, "request-id", "", "idempotency `id` (1-64 of A-Za-z0-9._-): repeating a command with the same id within 24h returns the first result instead of creating again (default: a new random id)")
}

// resolve checks the given id, or makes a random one: every attempt to send the request
// within this invocation then carries the same id, so a retry never creates twice.
func (r *requestIDFlag) resolve(c *cmdline) error {
	if r.id == "" {
		r.id = newRequestID()
	} else if !validRequestID(r.id) {
		return c.usageErr(fmt.Sprintf("-request-id %q: want 1-64 of A-Za-z0-9._-", r.id))
	}
	return nil
}

// sending returns the id after noting that a request carrying it is about to be sent, so
// that run can tell how to repeat it should its answer be lost.
func (r *requestIDFlag) sending(a *app) string {
	a.requestID = r.id
	return r.id
}

// newRequestID returns a random request id; the prefix tells audit readers where it came from.
func newRequestID() string { return "cmesh-" + strings.ToLower(rand.Text()) }

// validRequestID is the mesh's rule, checked here so a bad -request-id fails before any call.
func validRequestID(id string) bool { return telemetry.ValidRequestID(id) }

// parseTimeFlag parses an RFC 3339 time given to flag name.
func parseTimeFlag(name, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-%s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", name, s)
	}
	return t, nil
}
