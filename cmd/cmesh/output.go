package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// emit prints m as one protojson document with -o json, else as the table that table writes.
func (a *app) emit(m proto.Message, table func(w io.Writer) error) error {
	if a.output != "json" {
		return table(a.stdout)
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	_, err = a.stdout.Write(append(b, '\n'))
	return err
}

// writeJSON prints v, a result that is not a proto message, as one JSON document.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// table writes rows with aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	// An empty last cell would pad the line with spaces, and dropping it would end the column
	// block of the cell before it (tabwriter aligns only runs of lines with that column).
	if n := len(cells); n > 1 && cells[n-1] == "" {
		cells[n-1] = "-"
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// cell makes a server-supplied string safe for a table: a tab or newline would break the
// columns, and escape sequences could drive the terminal.
func cell(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

func writeTenants(w io.Writer, tenants []*authv1.Tenant) error {
	t := newTable(w, "ID", "SLUG", "NAME", "STATE", "CREATED")
	for _, x := range tenants {
		t.row(x.GetId(), x.GetSlug(), x.GetDisplayName(), stateName(x.GetState()), formatTimestamp(x.GetCreateTime()))
	}
	return t.flush()
}

func writeUsers(w io.Writer, users []*authv1.User) error {
	t := newTable(w, "ID", "EMAIL", "NAME", "ROLE", "STATE", "CREATED")
	for _, u := range users {
		t.row(u.GetId(), u.GetEmail(), u.GetDisplayName(), roleName(u.GetRole()), stateName(u.GetState()), formatTimestamp(u.GetCreateTime()))
	}
	return t.flush()
}

func writeSigningKeys(w io.Writer, keys []*authv1.SigningKey) error {
	t := newTable(w, "KID", "ALG", "ACTIVE", "CREATED")
	for _, k := range keys {
		active := "no"
		if k.GetActive() {
			active = "yes"
		}
		t.row(k.GetKid(), k.GetAlg(), active, formatTimestamp(k.GetCreateTime()))
	}
	return t.flush()
}

func writeWhoAmI(w io.Writer, r *authv1.WhoAmIResponse) error {
	tenant := r.GetTenantId()
	if tenant == "" {
		tenant = "platform"
	}
	t := newTable(w)
	t.row("TENANT", tenant)
	t.row("SUBJECT", r.GetSubject())
	t.row("ROLE", roleName(r.GetRole()))
	t.row("CREDENTIAL", r.GetCredentialKind())
	t.row("PEER", r.GetPeerService())
	perms := r.GetPermissions()
	if len(perms) == 0 {
		t.row("PERMISSIONS", "")
	}
	for i, p := range perms {
		label := ""
		if i == 0 {
			label = "PERMISSIONS"
		}
		t.row(label, p)
	}
	return t.flush()
}

// stateName shows a Tenant or User state without its prefix: "active", "suspended"...
func stateName(s fmt.Stringer) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

// formatTime shows a time as RFC 3339 in UTC.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func formatTimestamp(ts *timestamppb.Timestamp) string { return formatTimestampOr(ts, "-") }

// formatTimestampOr shows ts as formatTime does, or none when it is not set.
func formatTimestampOr(ts *timestamppb.Timestamp, none string) string {
	if ts == nil {
		return none
	}
	return formatTime(ts.AsTime())
}

// printError prints err for a person: a gRPC status as "message (Code)", after the context
// it was wrapped in, with the fields a BadRequest detail names. sentToken says the call
// carried an access token, so that Unauthenticated means logging in again would help.
func printError(w io.Writer, err error, sentToken bool) {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if !errors.As(err, &se) {
		fmt.Fprintf(w, "cmesh: %v\n", err)
		return
	}
	st := se.GRPCStatus()
	// Keep what the status was wrapped in, e.g. "renew session: ".
	prefix, ok := strings.CutSuffix(err.Error(), se.Error())
	if !ok {
		prefix = ""
	}
	fmt.Fprintf(w, "cmesh: %s%s (%s)\n", prefix, st.Message(), st.Code())
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fmt.Fprintf(w, "  %s: %s\n", v.GetField(), v.GetDescription())
			}
		}
	}
	switch {
	case st.Code() == codes.Unauthenticated && sentToken:
		fmt.Fprintln(w, "hint: run cmesh login")
	case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "x509"):
		fmt.Fprintln(w, "hint: pass -cacert (or set CMESH_CACERT) to the CA that signs the gateway certificate")
	}
}
