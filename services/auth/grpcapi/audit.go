package grpcapi

import (
	"context"
	"strings"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// ListAuditRecords implements authv1.AuthServiceServer.
func (s *Server) ListAuditRecords(ctx context.Context, req *authv1.ListAuditRecordsRequest) (*authv1.ListAuditRecordsResponse, error) {
	f := auth.AuditFilter{Actor: req.GetActor(), Method: req.GetMethod(), Resource: req.GetResource(), Outcome: strings.ToUpper(req.GetOutcome())}
	if req.GetStartTime() != nil {
		f.Start = req.GetStartTime().AsTime()
	}
	if req.GetEndTime() != nil {
		f.End = req.GetEndTime().AsTime()
	}
	es, next, err := s.svc.ListAuditRecords(ctx, authn.FromContext(ctx), f, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &authv1.ListAuditRecordsResponse{NextPageToken: next}
	for _, e := range es {
		resp.Records = append(resp.Records, auditToProto(e))
	}
	return resp, nil
}

// VerifyAuditChain implements authv1.AuthServiceServer.
func (s *Server) VerifyAuditChain(ctx context.Context, _ *authv1.VerifyAuditChainRequest) (*authv1.VerifyAuditChainResponse, error) {
	c, err := s.svc.VerifyAuditChain(ctx, authn.FromContext(ctx))
	if err != nil {
		return nil, err
	}
	return &authv1.VerifyAuditChainResponse{Ok: c.OK, RecordsChecked: c.Checked, FirstBrokenSequence: c.FirstBrokenSequence, Reason: c.Reason}, nil
}

// AppendAuditRecords implements authv1.AuthServiceServer.
func (s *Server) AppendAuditRecords(ctx context.Context, req *authv1.AppendAuditRecordsRequest) (*authv1.AppendAuditRecordsResponse, error) {
	recs := make([]auth.AuditEntry, 0, len(req.GetRecords()))
	for _, r := range req.GetRecords() {
		recs = append(recs, auth.NewAuditEntry(auditpb.FromProto(r)))
	}
	caller, err := mtls.PeerService(ctx) // the access rule admitted only mesh identities
	if err != nil {
		return nil, err
	}
	appended, dups, err := s.svc.AppendAuditRecords(ctx, caller, recs)
	if err != nil {
		return nil, err
	}
	return &authv1.AppendAuditRecordsResponse{Appended: int64(appended), Duplicates: int64(dups)}, nil
}

func auditToProto(e auth.AuditEntry) *authv1.AuditRecord {
	p := auditpb.ToProto(e.Record)
	p.Outcome, p.Sequence, p.PreviousHash, p.Hash = e.OutcomeName, e.Sequence, e.PreviousHash, e.Hash
	return p
}
