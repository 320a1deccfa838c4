package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var auditCommands = []*command{
	{
		name:    "list",
		summary: "list audit records, oldest first",
		details: `Filters combine with AND. Platform operators see the platform's own records.
-method takes the full method, or the form the table shows without "/campaignmesh.",
e.g. auth.v1.AuthService/CreateUser.`,
		run: runAuditList,
	},
	{
		name:    "verify",
		summary: "check the hash chain of the audit log",
		details: "Exits with status 1 when the chain is broken.",
		run:     runAuditVerify,
	},
}

// methodPrefix starts every CampaignMesh method; tables leave it out.
const methodPrefix = "/campaignmesh."

// outcomes are the gRPC code names the audit log records as outcomes, keyed by the name
// without underscores, so that "permission_denied", "PermissionDenied" and
// "PERMISSION_DENIED" all find PERMISSION_DENIED.
var outcomes = func() map[string]string {
	m := map[string]string{"CANCELED": "CANCELLED"} // Go's spelling of the code
	for _, name := range []string{
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED",
	} {
		m[strings.ReplaceAll(name, "_", "")] = name
	}
	return m
}()

// parseOutcome maps a gRPC code name, in any case and with or without underscores, to the
// name the audit log records.
func parseOutcome(s string) (string, error) {
	key := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "_", ""))
	if name, ok := outcomes[key]; ok {
		return name, nil
	}
	return "", fmt.Errorf("-outcome %q: want a gRPC code name such as OK, PERMISSION_DENIED or UNAUTHENTICATED", s)
}

// fullMethod completes a method as the table shows it to the full method name.
func fullMethod(m string) string {
	if m == "" || strings.HasPrefix(m, "/") {
		return m
	}
	return methodPrefix + m
}

// shortMethod leaves out the prefix every CampaignMesh method shares.
func shortMethod(m string) string { return strings.TrimPrefix(m, methodPrefix) }

func runAuditList(ctx context.Context, a *app, c *cmdline) error {
	var (
		l                                listFlags
		since                            time.Duration
		start, end                       string
		actor, method, resource, outcome string
	)
	c.DurationVar(&since, "since", 0, "records of the last `duration`, e.g. 24h")
	c.StringVar(&start, "start", "", "records at or after this RFC 3339 `time`")
	c.StringVar(&end, "end", "", "records before this RFC 3339 `time`")
	c.StringVar(&actor, "actor", "", "records of this `actor`: user id, API key id or service:<name>")
	c.StringVar(&method, "method", "", "records of this `method`, e.g. auth.v1.AuthService/CreateUser")
	c.StringVar(&resource, "resource", "", "records about this resource `id`")
	c.StringVar(&outcome, "outcome", "", "records with this outcome `code`, e.g. OK or PERMISSION_DENIED")
	l.register(c)
	if _, err := c.parse(a); err != nil {
		return err
	}
	if err := l.check(c); err != nil {
		return err
	}
	req := &authv1.ListAuditRecordsRequest{Actor: actor, Method: fullMethod(method), Resource: resource}
	switch {
	case since != 0 && start != "":
		return c.usageErr("-since and -start are exclusive")
	case since < 0:
		return c.usageErr("-since must be positive")
	case since > 0:
		req.StartTime = timestamppb.New(a.now().Add(-since))
	case start != "":
		t, err := parseTimeFlag("start", start)
		if err != nil {
			return c.usageErr(err.Error())
		}
		req.StartTime = timestamppb.New(t)
	}
	if end != "" {
		t, err := parseTimeFlag("end", end)
		if err != nil {
			return c.usageErr(err.Error())
		}
		if req.StartTime != nil && !t.After(req.StartTime.AsTime()) {
			return c.usageErr("the end is not after the start")
		}
		req.EndTime = timestamppb.New(t)
	}
	if outcome != "" {
		var err error
		if req.Outcome, err = parseOutcome(outcome); err != nil {
			return c.usageErr(err.Error())
		}
	}
	ctx, client, err := a.connect(ctx, true)
	if err != nil {
		return err
	}
	req.PageSize = int32(l.pageSize)
	records, next, err := listPages(ctx, a, &l, func(ctx context.Context, token string) ([]*authv1.AuditRecord, string, error) {
		req.PageToken = token // pages are fetched one after another
		resp, err := client.ListAuditRecords(ctx, req)
		return resp.GetRecords(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	resp := &authv1.ListAuditRecordsResponse{Records: records, NextPageToken: next}
	if err := a.emit(resp, func(w io.Writer) error { return writeAuditRecords(w, records) }); err != nil {
		return err
	}
	a.notePage(next)
	return nil
}

func runAuditVerify(ctx context.Context, a *app, c *cmdline) error {
	if _, err := c.parse(a); err != nil {
		return err
	}
	ctx, client, err := a.connect(ctx, true)
	if err != nil {
		return err
	}
	cctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := client.VerifyAuditChain(cctx, &authv1.VerifyAuditChainRequest{})
	if err != nil {
		return err
	}
	if err := a.emit(resp, func(w io.Writer) error { return writeAuditVerification(w, resp) }); err != nil {
		return err
	}
	if !resp.GetOk() {
		return errReported
	}
	return nil
}

func writeAuditVerification(w io.Writer, r *authv1.VerifyAuditChainResponse) error {
	var err error
	if r.GetOk() {
		_, err = fmt.Fprintf(w, "audit chain intact: %d records\n", r.GetRecordsChecked())
	} else {
		_, err = fmt.Fprintf(w, "audit chain BROKEN at sequence %d: %s (%d records checked)\n",
			r.GetFirstBrokenSequence(), cell(r.GetReason()), r.GetRecordsChecked())
	}
	return err
}

func writeAuditRecords(w io.Writer, records []*authv1.AuditRecord) error {
	t := newTable(w, "SEQ", "TIME", "ACTOR", "METHOD", "RESOURCE", "OUTCOME", "CLIENT")
	for _, r := range records {
		actor := r.GetActor()
		if actor == "" {
			actor = "-"
		}
		t.row(strconv.FormatInt(r.GetSequence(), 10), formatTimestamp(r.GetTime()), actor,
			shortMethod(r.GetMethod()), r.GetResource(), r.GetOutcome(), r.GetClientAddress())
	}
	return t.flush()
}
