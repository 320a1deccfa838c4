package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// dsrPermissionDetails says who may run the dsr commands.
const dsrPermissionDetails = `Needs the dsr.manage permission (roles privacy_officer and admin).`

var dsrCommands = []*command{
	{
		name:    "create",
		summary: "create a data-subject request: erasure, access, suppress or unsuppress",
		details: `Name the subject with any of -user-id, -anonymous-id and -email (each repeatable; 1-20
identifiers in all). -kind erasure suppresses the identifiers at once (ingest drops their new
events within 5 s), then deletes everything the mesh holds about them and the identifiers
linked to them; access exports it (cmesh dsr export); suppress only drops new events;
unsuppress lifts a suppression (deleted data does not come back).

The request is made once per -request-id: repeating the command with the same id returns
the request created first. Follow its progress with cmesh dsr watch ID.

` + dsrPermissionDetails,
		run: runDsrCreate,
	},
	{name: "get", args: "ID", summary: "show a request with each participant's progress", details: dsrPermissionDetails, run: runDsrGet},
	{
		name:    "list",
		summary: "list your tenant's data-subject requests, newest first",
		details: `-state and -kind take comma lists; -overdue keeps the open requests past their deadline.

` + dsrPermissionDetails,
		run: runDsrList,
	},
	{
		name:    "cancel",
		args:    "ID",
		summary: "cancel a request before its erasure starts",
		details: `An erasure can be cancelled while it is received or suppressing (its suppressions are
lifted); an access request until it ends.

` + dsrPermissionDetails,
		run: runDsrCancel,
	},
	{
		name:    "extend",
		args:    "ID",
		summary: "extend a request's deadline once, by at most 60 days, with a reason",
		details: `GDPR Art. 12(3): the deadline (received + 30 days) may be extended once, by up to 60 days;
the reason is recorded and shown with the request.

` + dsrPermissionDetails,
		run: runDsrExtend,
	},
	{
		name:    "watch",
		args:    "ID",
		summary: "follow a request's progress until it ends",
		details: `Asks for the request every -interval and prints a line whenever its state or a
participant's progress changes (with -o json, the request as one JSON object per line).
Exits 0 when the request completes, 1 when it fails or is cancelled; Ctrl-C stops watching
(the request goes on).

` + dsrPermissionDetails,
		run: runDsrWatch,
	},
	{
		name:    "export",
		args:    "ID",
		summary: "download a completed access request's export as newline-delimited JSON",
		details: `Writes one JSON object per record ({"participant", "type", "data"}) to -o FILE (mode
0600, complete or not at all) or to stdout, and the manifest's counts to stderr. The export
is kept 7 days after the request completes. -timeout bounds the wait for each message, not
the whole download.

` + dsrPermissionDetails,
		run: runDsrExport,
	},
	{name: "receipt", summary: "get and verify the signed receipts of completed requests", subs: receiptCommands},
	{name: "suppressions", summary: "read your tenant's suppression list", subs: suppressionCommands},
}

var receiptCommands = []*command{
	{
		name:    "get",
		args:    "ID",
		summary: "get a completed request's signed receipt (JSON)",
		details: `The receipt holds the request, the subject's identifiers as keyed hashes (never their
values), each participant's outcome and counts, and the times, signed by dsr (Ed25519).
It is printed as JSON, or written to -o FILE; check it with cmesh dsr receipt verify.

` + dsrPermissionDetails,
		run: runReceiptGet,
	},
	{
		name:    "keys",
		summary: "list the public keys that verify receipts",
		details: `-o FILE saves them as JSON for cmesh dsr receipt verify -keys FILE (offline). Public: no
login needed.`,
		run: runReceiptKeys,
	},
	{
		name:    "verify",
		args:    "FILE",
		summary: "verify a receipt's signature, offline with -keys",
		details: `Checks locally that the receipt's signature is dsr's Ed25519 signature of its payload,
with the key it names: from -keys FILE (saved by cmesh dsr receipt keys -o FILE: no network
at all), else fetched once from the gateway (public: no login needed). The server is never
asked whether the receipt is valid. Any changed byte fails. Exits 1 when it does not verify.
FILE - reads the receipt from stdin: cmesh dsr receipt get ID | cmesh dsr receipt verify -`,
		run: runReceiptVerify,
	},
}

var suppressionCommands = []*command{
	{name: "list", summary: "list the suppressed identifiers (as hashes), newest first", details: dsrPermissionDetails, run: runSuppressionsList},
	{
		name:    "get",
		args:    "[VALUE]",
		summary: "tell whether an identifier is suppressed",
		details: `Give the identifier's value (a user id, anonymous id or email: a suppressed value is
dropped whatever field it comes in), or its hash with -hash. Exits 1 (NotFound) when it is
not suppressed.

` + dsrPermissionDetails,
		run: runSuppressionsGet,
	},
}

// dsr returns the DsrService client on the gateway connection, and ctx with the caller's
// access token, renewed first if needed.
func (a *app) dsr(ctx context.Context) (context.Context, dsrv1.DsrServiceClient, error) {
	return serviceClient(ctx, a, dsrv1.NewDsrServiceClient)
}

// callDsr makes one DsrService call within -timeout and prints its result.
func callDsr[M proto.Message](ctx context.Context, a *app, table func(io.Writer, M) error, call func(context.Context, dsrv1.DsrServiceClient) (M, error)) error {
	return callService(ctx, a, dsrv1.NewDsrServiceClient, table, call)
}

var (
	dsrKinds       = enumNames[dsrv1.Kind](dsrv1.Kind_value, "KIND_")
	dsrRegulations = enumNames[dsrv1.Regulation](dsrv1.Regulation_value, "REGULATION_")
	dsrStates      = enumNames[dsrv1.Request_State](dsrv1.Request_State_value, "STATE_")
)

// enumNames maps the names people type ("erasure") to the values of a proto enum, from its
// value map without the _UNSPECIFIED value.
func enumNames[E ~int32](values map[string]int32, prefix string) map[string]E {
	out := map[string]E{}
	for name, v := range values {
		if v != 0 {
			out[strings.ToLower(strings.TrimPrefix(name, prefix))] = E(v)
		}
	}
	return out
}

// stringsFlag is a repeatable flag.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }

func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

func runDsrCreate(ctx context.Context, a *app, c *cmdline) error {
	var (
		kind, regulation         string
		userIDs, anonIDs, emails stringsFlag
		rid                      requestIDFlag
	)
	c.StringVar(&kind, "kind", "", "`kind`: "+strings.Join(slices.Sorted(maps.Keys(dsrKinds)), ", ")+" (required)")
	c.StringVar(&regulation, "regulation", "", "`law`: gdpr or ccpa (required)")
	c.Var(&userIDs, "user-id", "the subject's user `id` (repeatable)")
	c.Var(&anonIDs, "anonymous-id", "the subject's anonymous `id` (repeatable)")
	c.Var(&emails, "email", "the subject's email `address` (repeatable)")
	rid.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if kind == "" || regulation == "" {
		return c.usageErr("-kind and -regulation are required")
	}
	r := &dsrv1.Request{}
	var err error
	if r.Kind, err = lookupName("kind", kind, dsrKinds); err != nil {
		return c.usageErr(err.Error())
	}
	if r.Regulation, err = lookupName("regulation", regulation, dsrRegulations); err != nil {
		return c.usageErr(err.Error())
	}
	for _, ids := range []struct {
		kind   dsrv1.Identifier_Kind
		values []string
	}{{dsrv1.Identifier_KIND_USER_ID, userIDs}, {dsrv1.Identifier_KIND_ANONYMOUS_ID, anonIDs}, {dsrv1.Identifier_KIND_EMAIL, emails}} {
		for _, v := range ids.values {
			if strings.TrimSpace(v) == "" {
				return c.usageErr("an identifier is empty")
			}
			r.Subject = append(r.Subject, &dsrv1.Identifier{Kind: ids.kind, Value: v})
		}
	}
	if len(r.Subject) == 0 {
		return c.usageErr("name the subject with -user-id, -anonymous-id or -email")
	}
	if err := rid.resolve(c); err != nil {
		return err
	}
	var id string // set when the table is printed: the hint is for people, not for -o json
	err = callDsr(ctx, a, func(w io.Writer, r *dsrv1.Request) error { id = r.GetId(); return writeRequest(w, r) },
		func(ctx context.Context, client dsrv1.DsrServiceClient) (*dsrv1.Request, error) {
			return client.CreateRequest(ctx, &dsrv1.CreateRequestRequest{Request: r, RequestId: rid.sending(a)})
		})
	if err == nil && id != "" {
		fmt.Fprintf(a.stderr, "follow its progress: cmesh dsr watch %s\n", id)
	}
	return err
}

func runDsrGet(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callDsr(ctx, a, writeRequest, func(ctx context.Context, client dsrv1.DsrServiceClient) (*dsrv1.Request, error) {
		return client.GetRequest(ctx, &dsrv1.GetRequestRequest{Id: args[0]})
	})
}

func runDsrList(ctx context.Context, a *app, c *cmdline) error {
	var (
		l             listFlags
		states, kinds string
		overdue       bool
	)
	l.register(c)
	c.StringVar(&states, "state", "", "only these `states` (comma list): "+strings.Join(slices.Sorted(maps.Keys(dsrStates)), ", "))
	c.StringVar(&kinds, "kind", "", "only these `kinds` (comma list): "+strings.Join(slices.Sorted(maps.Keys(dsrKinds)), ", "))
	c.BoolVar(&overdue, "overdue", false, "only open requests past their deadline")
	if _, err := c.parse(a); err != nil {
		return err
	}
	if err := l.check(c); err != nil {
		return err
	}
	req := &dsrv1.ListRequestsRequest{Overdue: overdue}
	for _, s := range splitList(states) {
		st, err := lookupName("state", s, dsrStates)
		if err != nil {
			return c.usageErr(err.Error())
		}
		req.States = append(req.States, st)
	}
	for _, s := range splitList(kinds) {
		k, err := lookupName("kind", s, dsrKinds)
		if err != nil {
			return c.usageErr(err.Error())
		}
		req.Kinds = append(req.Kinds, k)
	}
	ctx, client, err := a.dsr(ctx)
	if err != nil {
		return err
	}
	items, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]*dsrv1.Request, string, error) {
		r := proto.Clone(req).(*dsrv1.ListRequestsRequest)
		r.PageSize, r.PageToken = int32(l.pageSize), token
		resp, err := client.ListRequests(ctx, r)
		return resp.GetRequests(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	if err := a.emit(&dsrv1.ListRequestsResponse{Requests: items, NextPageToken: next}, func(w io.Writer) error { return writeRequests(w, items) }); err != nil {
		return err
	}
	a.notePage(next)
	return nil
}

func runDsrCancel(ctx context.Context, a *app, c *cmdline) error {
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	return callDsr(ctx, a, writeRequest, func(ctx context.Context, client dsrv1.DsrServiceClient) (*dsrv1.Request, error) {
		return client.CancelRequest(ctx, &dsrv1.CancelRequestRequest{Id: args[0]})
	})
}

func runDsrExtend(ctx context.Context, a *app, c *cmdline) error {
	var (
		days   int
		reason string
	)
	c.IntVar(&days, "days", 0, "`days` to add, 1-60 (required)")
	c.StringVar(&reason, "reason", "", "why, 1-500 characters, shown with the request (required)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	switch {
	case days < 1 || days > 60:
		return c.usageErr(fmt.Sprintf("-days %d: want 1 to 60", days))
	case strings.TrimSpace(reason) == "":
		return c.usageErr("-reason is required")
	}
	return callDsr(ctx, a, writeRequest, func(ctx context.Context, client dsrv1.DsrServiceClient) (*dsrv1.Request, error) {
		return client.ExtendDeadline(ctx, &dsrv1.ExtendDeadlineRequest{Id: args[0], Days: int32(days), Reason: reason})
	})
}

// ---- watch ----

func runDsrWatch(ctx context.Context, a *app, c *cmdline) error {
	var interval time.Duration
	c.DurationVar(&interval, "interval", time.Second, "`time` between two looks at the request (at least 100ms)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	if interval < 100*time.Millisecond {
		return c.usageErr(fmt.Sprintf("-interval %v: want at least 100ms", interval))
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	last := ""
	for {
		r, err := a.pollRequest(ctx, args[0])
		switch {
		case ctx.Err() != nil:
			return nil // Ctrl-C: the request goes on without us
		case err != nil && maybeDone(err):
			fmt.Fprintf(a.stderr, "watch: %s; trying again\n", status.Convert(err).Message())
		case err != nil:
			return err
		default:
			if p := progressKey(r); p != last {
				last = p
				if err := a.writeProgress(r); err != nil {
					return err
				}
			}
			if ended(r.GetState()) {
				return a.watchEnded(r)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// pollRequest gets the request within -timeout, with a token renewed if it has expired
// during a long watch.
func (a *app) pollRequest(ctx context.Context, id string) (*dsrv1.Request, error) {
	ctx, client, err := a.dsr(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	return client.GetRequest(ctx, &dsrv1.GetRequestRequest{Id: id})
}

func ended(s dsrv1.Request_State) bool {
	return s == dsrv1.Request_STATE_COMPLETED || s == dsrv1.Request_STATE_FAILED || s == dsrv1.Request_STATE_CANCELLED
}

// progressKey is what watch prints a line for when it changes: the request's state and each
// participant's state, attempts, error and counts (not the times, which change on every poll
// of a retrying participant).
func progressKey(r *dsrv1.Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v|%d", r.GetState(), len(r.GetCovered()))
	for _, p := range r.GetParticipants() {
		fmt.Fprintf(&b, "|%s %v %d %q %s", p.GetParticipant(), p.GetState(), p.GetAttempts(), p.GetLastError(), formatCounts(p.GetCounts()))
	}
	return b.String()
}

// writeProgress prints one line of watch: the time, the request's state and each
// participant's progress; with -o json, the request as one JSON object.
func (a *app) writeProgress(r *dsrv1.Request) error {
	if a.output == "json" {
		b, err := protojson.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		_, err = a.stdout.Write(append(b, '\n'))
		return err
	}
	parts := []string{formatTime(a.now()), enumName(r.GetState(), "STATE_")}
	if n := int64(len(r.GetCovered())); n > 0 { // grows as participants find linked identifiers
		parts = append(parts, fmt.Sprintf("%d %s", n, plural(n, "identifier", "identifiers")))
	}
	for _, p := range r.GetParticipants() {
		parts = append(parts, cell(p.GetParticipant())+": "+formatParticipantState(p)+countsSuffix(p.GetCounts()))
	}
	_, err := fmt.Fprintln(a.stdout, strings.Join(parts, "  "))
	return err
}

// watchEnded reports how the request ended: exit 0 when it completed, 1 otherwise.
func (a *app) watchEnded(r *dsrv1.Request) error {
	switch r.GetState() {
	case dsrv1.Request_STATE_COMPLETED:
		if r.GetKind() == dsrv1.Kind_KIND_ACCESS {
			fmt.Fprintf(a.stderr, "completed; download the export: cmesh dsr export -o FILE %s\n", r.GetId())
		}
		fmt.Fprintf(a.stderr, "completed; the signed receipt: cmesh dsr receipt get -o FILE %s\n", r.GetId())
		return nil
	case dsrv1.Request_STATE_FAILED:
		fmt.Fprintf(a.stderr, "cmesh: request %s failed: %s\n", r.GetId(), cell(r.GetFailureReason()))
	default:
		fmt.Fprintf(a.stderr, "cmesh: request %s was cancelled\n", r.GetId())
	}
	return errReported
}

// ---- export ----

func runDsrExport(ctx context.Context, a *app, c *cmdline) error {
	var file string
	c.StringVar(&file, "o", "", "write the records to this `file` (default: stdout)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	out, commit, abort, err := a.exportOutput(file)
	if err != nil {
		return err
	}
	defer abort()
	// Ctrl-C ends the download through the error path, which removes the partial file.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	ctx, client, err := a.dsr(ctx)
	if err != nil {
		return err
	}
	manifest, records, err := a.download(ctx, client, args[0], out)
	if err != nil {
		return err
	}
	if err := commit(); err != nil {
		return err
	}
	t := newTable(a.stderr, "PARTICIPANT", "RECORDS")
	for _, name := range slices.Sorted(maps.Keys(manifest.GetRecords())) {
		t.row(name, strconv.FormatInt(manifest.GetRecords()[name], 10))
	}
	if err := t.flush(); err != nil {
		return err
	}
	where := "stdout"
	if file != "" {
		where = file
	}
	fmt.Fprintf(a.stderr, "%d records (%d bytes) to %s; the export is deleted %s\n", records, manifest.GetBytes(), where, formatTimestamp(manifest.GetExpireTime()))
	return nil
}

// exportOutput opens where the export goes: stdout, or a temporary file next to file that
// commit renames to file (mode 0600: it holds personal data) and abort removes, so that an
// interrupted download never leaves what looks like a whole export.
func (a *app) exportOutput(file string) (w io.Writer, commit func() error, abort func(), err error) {
	if file == "" || file == "-" {
		return a.stdout, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".partial-*")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create export file: %w", err)
	}
	done := false
	commit = func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("write export file: %w", err)
		}
		if err := os.Rename(f.Name(), file); err != nil {
			return fmt.Errorf("write export file: %w", err)
		}
		done = true
		return nil
	}
	abort = func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}
	return f, commit, abort, nil
}

// download streams the export of request id to out, a record per line, and returns the
// manifest and the number of records written. -timeout bounds the wait for each message.
func (a *app) download(ctx context.Context, client dsrv1.DsrServiceClient, id string, out io.Writer) (*dsrv1.ExportManifest, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(a.timeout, cancel)
	defer idle.Stop()
	stream, err := client.DownloadExport(ctx, &dsrv1.DownloadExportRequest{Id: id})
	if err != nil {
		return nil, 0, err
	}
	var (
		manifest *dsrv1.ExportManifest
		records  int64
	)
	for {
		msg, err := stream.Recv()
		idle.Reset(a.timeout)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if status.Code(err) == codes.Canceled && ctx.Err() != nil {
				return nil, records, fmt.Errorf("export: nothing received for %v (-timeout)", a.timeout)
			}
			return nil, records, err
		}
		switch {
		case msg.GetManifest() != nil && manifest == nil:
			manifest = msg.GetManifest()
		case msg.GetRecord() != nil && manifest != nil:
			b, err := protojson.Marshal(msg.GetRecord())
			if err != nil {
				return nil, records, fmt.Errorf("encode record: %w", err)
			}
			if _, err := out.Write(append(b, '\n')); err != nil {
				return nil, records, fmt.Errorf("write export: %w", err)
			}
			records++
		default:
			return nil, records, errors.New("export: the server sent a message out of order")
		}
	}
	if manifest == nil {
		return nil, 0, errors.New("export: the server sent no manifest")
	}
	var want int64
	for _, n := range manifest.GetRecords() {
		want += n
	}
	if records != want {
		return nil, records, fmt.Errorf("export incomplete: %d records received, the manifest says %d", records, want)
	}
	return manifest, records, nil
}

// ---- receipts ----

func runReceiptGet(ctx context.Context, a *app, c *cmdline) error {
	var file string
	c.StringVar(&file, "o", "", "write the receipt to this `file` (default: stdout)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	ctx, client, err := a.dsr(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	r, err := client.GetReceipt(cctx, &dsrv1.GetReceiptRequest{Id: args[0]})
	if err != nil {
		return err
	}
	return a.saveJSON(r, file, "receipt of "+args[0])
}

// saveJSON writes m as JSON to file, or to stdout when file is empty.
func (a *app) saveJSON(m proto.Message, file, what string) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	b = append(b, '\n')
	if file == "" || file == "-" {
		_, err := a.stdout.Write(b)
		return err
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	fmt.Fprintf(a.stderr, "wrote the %s to %s\n", what, file)
	return nil
}

func runReceiptKeys(ctx context.Context, a *app, c *cmdline) error {
	var file string
	c.StringVar(&file, "o", "", "save the keys as JSON to this `file`, for verify -keys")
	if _, err := c.parse(a); err != nil {
		return err
	}
	keys, err := a.fetchReceiptKeys(ctx)
	if err != nil {
		return err
	}
	if file != "" {
		return a.saveJSON(keys, file, "receipt keys")
	}
	return a.emit(keys, func(w io.Writer) error { return writeReceiptKeys(w, keys.GetKeys()) })
}

// fetchReceiptKeys asks the gateway for the receipt keys: public, so no login is needed.
func (a *app) fetchReceiptKeys(ctx context.Context) (*dsrv1.ListReceiptKeysResponse, error) {
	if _, err := a.authClient(); err != nil { // dials the gateway; no token
		return nil, err
	}
	cc, ok := a.conn.(grpc.ClientConnInterface)
	if !ok {
		return nil, fmt.Errorf("connection to %s cannot carry calls of other services", a.addr)
	}
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	return dsrv1.NewDsrServiceClient(cc).ListReceiptKeys(ctx, &dsrv1.ListReceiptKeysRequest{})
}

func runReceiptVerify(ctx context.Context, a *app, c *cmdline) error {
	var keysFile string
	c.StringVar(&keysFile, "keys", "", "verify offline with the keys in this JSON `file` (from cmesh dsr receipt keys -o FILE)")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	receipt := &dsrv1.Receipt{}
	if err := a.readJSONFile(args[0], receipt); err != nil {
		return fmt.Errorf("read receipt: %w", err)
	}
	keys := &dsrv1.ListReceiptKeysResponse{}
	if keysFile != "" {
		if err := a.readJSONFile(keysFile, keys); err != nil {
			return fmt.Errorf("read receipt keys: %w", err)
		}
	} else if keys, err = a.fetchReceiptKeys(ctx); err != nil {
		return fmt.Errorf("fetch receipt keys: %w", err)
	}
	verdict := &dsrv1.VerifyReceiptResponse{Valid: true}
	if err := verifyReceipt(receipt, keys.GetKeys()); err != nil {
		verdict = &dsrv1.VerifyReceiptResponse{Reason: err.Error()}
	}
	if err := a.emit(verdict, func(w io.Writer) error { return writeVerdict(w, verdict, receipt) }); err != nil {
		return err
	}
	if !verdict.GetValid() {
		return errReported
	}
	return nil
}

// readJSONFile reads one protojson document from path ("-": stdin) into m; unknown fields
// are refused.
func (a *app) readJSONFile(path string, m proto.Message) error {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(a.stdin, 16<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	if err := protojson.Unmarshal(data, m); err != nil {
		return fmt.Errorf("%s is not a %s in JSON: %v", path, m.ProtoReflect().Descriptor().Name(), err)
	}
	return nil
}

// verifyReceipt checks a receipt as dsr signs it: signature is the Ed25519 signature, by the
// key named key_id among keys, of the bytes of payload exactly as they are (the canonical
// JSON). It returns why the receipt does not verify, or nil. Any changed byte of the payload,
// the signature or the key id fails.
func verifyReceipt(r *dsrv1.Receipt, keys []*dsrv1.ReceiptKey) error {
	if r.GetPayload() == "" || len(r.GetSignature()) == 0 || r.GetKeyId() == "" {
		return errors.New("not a signed receipt: payload, signature or key id missing")
	}
	byID := map[string]ed25519.PublicKey{}
	for _, k := range keys {
		if k.GetAlgorithm() == receipt.Algorithm {
			byID[k.GetKeyId()] = ed25519.PublicKey(k.GetPublicKey())
		}
	}
	_, err := receipt.Verify(receipt.Receipt{Payload: r.GetPayload(), Signature: r.GetSignature(), KeyID: r.GetKeyId()}, byID)
	switch {
	case errors.Is(err, receipt.ErrUnknownKey):
		return fmt.Errorf("unknown key %q", r.GetKeyId())
	case errors.Is(err, receipt.ErrSignatureMismatch):
		return errors.New("signature mismatch: the receipt was changed or not signed by this key")
	case err != nil:
		return fmt.Errorf("the signature holds but the payload is not a receipt: %w", err)
	}
	return nil
}

// ---- suppressions ----

func runSuppressionsList(ctx context.Context, a *app, c *cmdline) error {
	var l listFlags
	l.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if err := l.check(c); err != nil {
		return err
	}
	ctx, client, err := a.dsr(ctx)
	if err != nil {
		return err
	}
	items, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]*dsrv1.Suppression, string, error) {
		resp, err := client.ListSuppressions(ctx, &dsrv1.ListSuppressionsRequest{PageSize: int32(l.pageSize), PageToken: token})
		return resp.GetSuppressions(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	if err := a.emit(&dsrv1.ListSuppressionsResponse{Suppressions: items, NextPageToken: next}, func(w io.Writer) error { return writeSuppressions(w, items) }); err != nil {
		return err
	}
	a.notePage(next)
	return nil
}

func runSuppressionsGet(ctx context.Context, a *app, c *cmdline) error {
	var hash string
	c.StringVar(&hash, "hash", "", "the identifier's subject `hash` (hex), instead of its value")
	args, err := c.parse(a)
	if err != nil {
		return err
	}
	req := &dsrv1.GetSuppressionRequest{SubjectHash: hash}
	switch {
	case len(args) == 1 && hash != "":
		return c.usageErr("give VALUE or -hash, not both")
	case len(args) == 1:
		req.Value = args[0]
	case hash == "":
		return c.usageErr("give the identifier's VALUE or -hash")
	}
	return callDsr(ctx, a, func(w io.Writer, s *dsrv1.Suppression) error { return writeSuppressions(w, []*dsrv1.Suppression{s}) },
		func(ctx context.Context, client dsrv1.DsrServiceClient) (*dsrv1.Suppression, error) {
			return client.GetSuppression(ctx, req)
		})
}

// ---- output ----

func formatIdentifier(id *dsrv1.Identifier) string {
	v := id.GetValue()
	if v == "" {
		v = "(purged)"
	}
	return enumName(id.GetKind(), "KIND_") + " " + v
}

func formatIdentifiers(ids []*dsrv1.Identifier) string {
	var out []string
	for _, id := range ids {
		out = append(out, formatIdentifier(id))
	}
	return orDash(strings.Join(out, ", "))
}

func formatCovered(c *dsrv1.CoveredIdentifier) string {
	s := formatIdentifier(c.GetIdentifier()) + "  hash " + shortHash(c.GetSubjectHash())
	if c.GetLinked() {
		s += "  (linked by " + c.GetLinkedBy() + ")"
	}
	return s
}

// shortHash shows the start of a subject hash, enough to tell hashes apart in a table.
func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return orDash(h)
}

// formatCounts shows counts by kind of record, sorted: "events=1204 sessions=2".
func formatCounts(counts map[string]int64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, k+"="+strconv.FormatInt(counts[k], 10))
	}
	return strings.Join(out, " ")
}

func countsSuffix(counts map[string]int64) string {
	if s := formatCounts(counts); s != "" {
		return " " + s
	}
	return ""
}

func formatParticipantState(p *dsrv1.ParticipantStatus) string {
	s := enumName(p.GetState(), "STATE_")
	if p.GetAttempts() > 0 {
		s += fmt.Sprintf(" (%d %s)", p.GetAttempts(), plural(int64(p.GetAttempts()), "attempt", "attempts"))
	}
	if p.GetState() == dsrv1.ParticipantStatus_STATE_RETRYING && p.GetNextAttemptTime() != nil {
		s += ", next " + formatTimestamp(p.GetNextAttemptTime())
	}
	if p.GetLastError() != "" && p.GetState() != dsrv1.ParticipantStatus_STATE_DONE {
		s += ": " + p.GetLastError()
	}
	return s
}

func formatDeadline(r *dsrv1.Request) string {
	s := formatTimestamp(r.GetDeadlineTime())
	if r.GetOverdue() {
		s += " OVERDUE"
	}
	return s
}

// writeRequest shows one request field by field, then its participants.
func writeRequest(w io.Writer, r *dsrv1.Request) error {
	t := newTable(w)
	t.row("ID", r.GetId())
	t.row("KIND", enumName(r.GetKind(), "KIND_")+" ("+enumName(r.GetRegulation(), "REGULATION_")+")")
	state := enumName(r.GetState(), "STATE_")
	if r.GetFailureReason() != "" {
		state += ": " + r.GetFailureReason()
	}
	t.row("STATE", state)
	t.row("SUBJECT", formatIdentifiers(r.GetSubject()))
	for i, c := range r.GetCovered() {
		label := ""
		if i == 0 {
			label = "COVERED"
		}
		t.row(label, formatCovered(c))
	}
	created := formatTimestamp(r.GetCreateTime())
	if r.GetCreatedBy() != "" {
		created += " by " + r.GetCreatedBy()
	}
	t.row("CREATED", created)
	t.row("DEADLINE", formatDeadline(r))
	if x := r.GetExtension(); x != nil {
		t.row("EXTENDED", fmt.Sprintf("+%d days on %s by %s: %s", x.GetDays(), formatTimestamp(x.GetCreateTime()), orDash(x.GetExtendedBy()), x.GetReason()))
	}
	if r.GetEndTime() != nil {
		t.row("ENDED", formatTimestamp(r.GetEndTime()))
	}
	if e := r.GetExport(); e != nil {
		var n int64
		for _, c := range e.GetRecords() {
			n += c
		}
		t.row("EXPORT", fmt.Sprintf("%d records, %d bytes, until %s", n, e.GetBytes(), formatTimestamp(e.GetExpireTime())))
	}
	if r.GetRequestId() != "" {
		t.row("REQUEST ID", r.GetRequestId())
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.GetParticipants()) == 0 {
		return nil
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	p := newTable(w, "PARTICIPANT", "STATE", "ATTEMPTS", "COUNTS", "UPDATED", "LAST ERROR")
	for _, s := range r.GetParticipants() {
		state := enumName(s.GetState(), "STATE_")
		if s.GetState() == dsrv1.ParticipantStatus_STATE_RETRYING && s.GetNextAttemptTime() != nil {
			state += " (next " + formatTimestamp(s.GetNextAttemptTime()) + ")"
		}
		p.row(s.GetParticipant(), state, strconv.Itoa(int(s.GetAttempts())), orDash(formatCounts(s.GetCounts())),
			formatTimestamp(s.GetUpdateTime()), s.GetLastError())
	}
	return p.flush()
}

func writeRequests(w io.Writer, rs []*dsrv1.Request) error {
	t := newTable(w, "ID", "KIND", "STATE", "CREATED", "DEADLINE", "SUBJECT")
	for _, r := range rs {
		t.row(r.GetId(), enumName(r.GetKind(), "KIND_")+" ("+enumName(r.GetRegulation(), "REGULATION_")+")", enumName(r.GetState(), "STATE_"),
			formatTimestamp(r.GetCreateTime()), formatDeadline(r), formatIdentifiers(r.GetSubject()))
	}
	return t.flush()
}

func writeSuppressions(w io.Writer, ss []*dsrv1.Suppression) error {
	t := newTable(w, "SUBJECT HASH", "REQUEST", "SUPPRESSED")
	for _, s := range ss {
		t.row(s.GetSubjectHash(), s.GetDsrRequest(), formatTimestamp(s.GetCreateTime()))
	}
	return t.flush()
}

func writeReceiptKeys(w io.Writer, keys []*dsrv1.ReceiptKey) error {
	t := newTable(w, "KEY ID", "ALG", "CREATED", "PUBLIC KEY (BASE64)")
	for _, k := range keys {
		t.row(k.GetKeyId(), k.GetAlgorithm(), formatTimestamp(k.GetCreateTime()), base64.StdEncoding.EncodeToString(k.GetPublicKey()))
	}
	return t.flush()
}

func writeVerdict(w io.Writer, v *dsrv1.VerifyReceiptResponse, r *dsrv1.Receipt) error {
	var err error
	if v.GetValid() {
		_, err = fmt.Fprintf(w, "receipt valid: signed by key %s\n", cell(r.GetKeyId()))
	} else {
		_, err = fmt.Fprintf(w, "receipt INVALID: %s\n", cell(v.GetReason()))
	}
	return err
}
