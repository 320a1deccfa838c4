// Package grpcapi serves the dsr domain over gRPC (and, through the gateway, REST). Handlers
// are thin: decode, call the domain, encode.
package grpcapi

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// ServiceName is the dsr service's mesh identity and its name in audit records.
const ServiceName = "dsr"

// ServerOptions are the platform options of the dsr server, shared by main and the tests:
// credentials checked by verifier, every audited call recorded through auditor (the service's
// audit outbox). Idempotent creates are the store's (a unique request_id per tenant), not the
// platform's interceptor, so a retry returns the request as it is now.
func ServerOptions(verifier grpcserver.Verifier, auditor audit.Sink, logger *slog.Logger) []grpcserver.Option {
	return []grpcserver.Option{
		grpcserver.WithService(ServiceName),
		grpcserver.WithLogger(logger),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithAuditor(auditor),
		grpcserver.WithErrorClassifier(pgdb.Classify),
	}
}

// Server implements dsrv1.DsrServiceServer.
type Server struct {
	dsrv1.UnimplementedDsrServiceServer
	svc *dsr.Service
	now func() time.Time
}

var _ dsrv1.DsrServiceServer = (*Server)(nil)

// NewServer returns the gRPC server of svc.
func NewServer(svc *dsr.Service) *Server { return &Server{svc: svc, now: time.Now} }

// CreateRequest implements dsrv1.DsrServiceServer.
func (s *Server) CreateRequest(ctx context.Context, req *dsrv1.CreateRequestRequest) (*dsrv1.Request, error) {
	in := dsr.CreateInput{
		Kind: kindFromProto(req.GetRequest().GetKind()), Regulation: regulationFromProto(req.GetRequest().GetRegulation()),
		RequestID: req.GetRequestId(),
	}
	for _, id := range req.GetRequest().GetSubject() {
		in.Subject = append(in.Subject, identifierFromProto(id))
	}
	r, err := s.svc.CreateRequest(ctx, authn.FromContext(ctx), in)
	return s.requestToProto(r), err
}

// GetRequest implements dsrv1.DsrServiceServer.
func (s *Server) GetRequest(ctx context.Context, req *dsrv1.GetRequestRequest) (*dsrv1.Request, error) {
	r, err := s.svc.GetRequest(ctx, authn.FromContext(ctx), req.GetId())
	return s.requestToProto(r), err
}

// ListRequests implements dsrv1.DsrServiceServer.
func (s *Server) ListRequests(ctx context.Context, req *dsrv1.ListRequestsRequest) (*dsrv1.ListRequestsResponse, error) {
	lr := dsr.ListRequest{PageSize: req.GetPageSize(), PageToken: req.GetPageToken(), Overdue: req.GetOverdue()}
	for _, st := range req.GetStates() {
		lr.States = append(lr.States, stateFromProto(st))
	}
	for _, k := range req.GetKinds() {
		lr.Kinds = append(lr.Kinds, kindFromProto(k))
	}
	items, next, err := s.svc.ListRequests(ctx, authn.FromContext(ctx), lr)
	if err != nil {
		return nil, err
	}
	resp := &dsrv1.ListRequestsResponse{NextPageToken: next}
	for _, r := range items {
		resp.Requests = append(resp.Requests, s.requestToProto(r))
	}
	return resp, nil
}

// CancelRequest implements dsrv1.DsrServiceServer.
func (s *Server) CancelRequest(ctx context.Context, req *dsrv1.CancelRequestRequest) (*dsrv1.Request, error) {
	r, err := s.svc.CancelRequest(ctx, authn.FromContext(ctx), req.GetId())
	return s.requestToProto(r), err
}

// ExtendDeadline implements dsrv1.DsrServiceServer.
func (s *Server) ExtendDeadline(ctx context.Context, req *dsrv1.ExtendDeadlineRequest) (*dsrv1.Request, error) {
	r, err := s.svc.ExtendDeadline(ctx, authn.FromContext(ctx), req.GetId(), int(req.GetDays()), req.GetReason())
	return s.requestToProto(r), err
}

// DownloadExport implements dsrv1.DsrServiceServer.
func (s *Server) DownloadExport(req *dsrv1.DownloadExportRequest, stream dsrv1.DsrService_DownloadExportServer) error {
	ctx := stream.Context()
	return s.svc.DownloadExport(ctx, authn.FromContext(ctx), req.GetId(),
		func(m dsr.Manifest) error {
			return stream.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Manifest{Manifest: manifestToProto(&m)}})
		},
		func(rec dsr.ExportRecord) error {
			data := &structpb.Struct{}
			if err := protojson.Unmarshal(rec.Data, data); err != nil {
				return err
			}
			return stream.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Record{Record: &dsrv1.ExportRecord{
				Participant: rec.Participant, Type: rec.Type, Data: data}}})
		})
}

// GetReceipt implements dsrv1.DsrServiceServer.
func (s *Server) GetReceipt(ctx context.Context, req *dsrv1.GetReceiptRequest) (*dsrv1.Receipt, error) {
	r, err := s.svc.GetReceipt(ctx, authn.FromContext(ctx), req.GetId())
	if err != nil {
		return nil, err
	}
	return &dsrv1.Receipt{Payload: r.Payload, Signature: r.Signature, KeyId: r.KeyID}, nil
}

// ListReceiptKeys implements dsrv1.DsrServiceServer.
func (s *Server) ListReceiptKeys(ctx context.Context, _ *dsrv1.ListReceiptKeysRequest) (*dsrv1.ListReceiptKeysResponse, error) {
	keys, err := s.svc.ReceiptKeys(ctx)
	if err != nil {
		return nil, err
	}
	resp := &dsrv1.ListReceiptKeysResponse{}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, &dsrv1.ReceiptKey{KeyId: k.KID, Algorithm: receipt.Algorithm, PublicKey: k.Public, CreateTime: timestamppb.New(k.CreateTime)})
	}
	return resp, nil
}

// VerifyReceipt implements dsrv1.DsrServiceServer.
func (s *Server) VerifyReceipt(ctx context.Context, req *dsrv1.VerifyReceiptRequest) (*dsrv1.VerifyReceiptResponse, error) {
	r := req.GetReceipt()
	reason, err := s.svc.VerifyReceipt(ctx, receipt.Receipt{Payload: r.GetPayload(), Signature: r.GetSignature(), KeyID: r.GetKeyId()})
	if err != nil {
		return nil, err
	}
	return &dsrv1.VerifyReceiptResponse{Valid: reason == "", Reason: reason}, nil
}

// ListSuppressions implements dsrv1.DsrServiceServer.
func (s *Server) ListSuppressions(ctx context.Context, req *dsrv1.ListSuppressionsRequest) (*dsrv1.ListSuppressionsResponse, error) {
	items, next, err := s.svc.ListSuppressions(ctx, authn.FromContext(ctx), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &dsrv1.ListSuppressionsResponse{NextPageToken: next}
	for _, sup := range items {
		resp.Suppressions = append(resp.Suppressions, suppressionToProto(sup))
	}
	return resp, nil
}

// GetSuppression implements dsrv1.DsrServiceServer.
func (s *Server) GetSuppression(ctx context.Context, req *dsrv1.GetSuppressionRequest) (*dsrv1.Suppression, error) {
	sup, err := s.svc.GetSuppression(ctx, authn.FromContext(ctx), req.GetValue(), req.GetSubjectHash())
	if err != nil {
		return nil, err
	}
	return suppressionToProto(sup), nil
}

// GetPrivacyPolicy implements dsrv1.DsrServiceServer.
func (s *Server) GetPrivacyPolicy(ctx context.Context, _ *dsrv1.GetPrivacyPolicyRequest) (*dsrv1.PrivacyPolicy, error) {
	p, err := s.svc.GetPolicy(ctx, authn.FromContext(ctx))
	if err != nil {
		return nil, err
	}
	return policyToProto(p), nil
}

// UpdatePrivacyPolicy implements dsrv1.DsrServiceServer.
func (s *Server) UpdatePrivacyPolicy(ctx context.Context, req *dsrv1.UpdatePrivacyPolicyRequest) (*dsrv1.PrivacyPolicy, error) {
	p, err := s.svc.UpdatePolicy(ctx, authn.FromContext(ctx), policyFromProto(req.GetPolicy()), req.GetUpdateMask().GetPaths(), req.GetEtag())
	if err != nil {
		return nil, err
	}
	return policyToProto(p), nil
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil || t.IsZero() {
		return nil
	}
	return timestamppb.New(*t)
}

func (s *Server) requestToProto(r dsr.Request) *dsrv1.Request {
	if r.ID == "" {
		return nil
	}
	out := &dsrv1.Request{
		Id: r.ID, Kind: kindToProto(r.Kind), Regulation: regulationToProto(r.Regulation), State: stateToProto(r.State),
		RequestId: r.RequestID, FailureReason: r.FailureReason, CreateTime: ts(&r.CreateTime), UpdateTime: ts(&r.UpdateTime),
		DeadlineTime: ts(&r.Deadline), EndTime: ts(r.EndTime), Overdue: r.Overdue(s.now()), CreatedBy: r.CreatedBy,
		Export: manifestToProto(r.Export),
	}
	for _, id := range r.Subject {
		out.Subject = append(out.Subject, identifierToProto(id))
	}
	for _, c := range r.Covered {
		out.Covered = append(out.Covered, &dsrv1.CoveredIdentifier{Identifier: identifierToProto(c.Identifier), SubjectHash: c.Hash, Linked: c.Linked, LinkedBy: c.LinkedBy})
	}
	for _, p := range r.Participants {
		out.Participants = append(out.Participants, &dsrv1.ParticipantStatus{
			Participant: p.Name, State: pstateToProto(p.State), Attempts: int32(p.Attempts), LastError: p.LastError,
			NextAttemptTime: ts(p.NextAttempt), Counts: p.Counts, UpdateTime: ts(&p.UpdateTime),
		})
	}
	if e := r.Extension; e != nil {
		out.Extension = &dsrv1.DeadlineExtension{Days: int32(e.Days), Reason: e.Reason, CreateTime: ts(&e.CreateTime), ExtendedBy: e.ExtendedBy}
	}
	return out
}

func manifestToProto(m *dsr.Manifest) *dsrv1.ExportManifest {
	if m == nil {
		return nil
	}
	return &dsrv1.ExportManifest{Records: m.Records, Bytes: m.Bytes, ExpireTime: ts(&m.ExpireTime)}
}

func suppressionToProto(s dsr.Suppression) *dsrv1.Suppression {
	return &dsrv1.Suppression{SubjectHash: s.Hash, DsrRequest: s.RequestID, CreateTime: ts(&s.CreateTime)}
}

func policyToProto(p dsr.Policy) *dsrv1.PrivacyPolicy {
	out := &dsrv1.PrivacyPolicy{
		RetentionDays: int32(p.RetentionDays), Version: p.Version, Etag: dsr.Etag(p), UpdateTime: ts(p.UpdateTime),
		DefaultPropertyAction: actionToProto[p.DefaultPropertyAction], IpHandling: ipToProto[p.IP], UserAgentHandling: uaToProto[p.UserAgent],
	}
	for _, k := range slices.Sorted(maps.Keys(p.PropertyRules)) {
		out.PropertyRules = append(out.PropertyRules, &dsrv1.PrivacyPolicy_PropertyRule{Key: k, Action: actionToProto[p.PropertyRules[k]]})
	}
	return out
}

// invalid is a value no validation accepts, for enum values the domain does not know.
const invalid = "invalid"

func policyFromProto(p *dsrv1.PrivacyPolicy) privacy.Policy {
	out := privacy.Policy{RetentionDays: int(p.GetRetentionDays())}
	switch a := p.GetDefaultPropertyAction(); a {
	case dsrv1.PrivacyPolicy_PROPERTY_ACTION_UNSPECIFIED:
	default:
		out.DefaultPropertyAction = actionFromProto(a)
	}
	out.IP = map[dsrv1.PrivacyPolicy_IPHandling]privacy.IPHandling{
		dsrv1.PrivacyPolicy_IP_HANDLING_UNSPECIFIED: "", dsrv1.PrivacyPolicy_IP_HANDLING_KEEP: privacy.IPKeep,
		dsrv1.PrivacyPolicy_IP_HANDLING_TRUNCATE: privacy.IPTruncate, dsrv1.PrivacyPolicy_IP_HANDLING_DROP: privacy.IPDrop,
	}[p.GetIpHandling()]
	if _, ok := ipToProtoInv[p.GetIpHandling()]; !ok {
		out.IP = invalid
	}
	switch p.GetUserAgentHandling() {
	case dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_UNSPECIFIED:
	case dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_KEEP:
		out.UserAgent = privacy.UserAgentKeep
	case dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_DROP:
		out.UserAgent = privacy.UserAgentDrop
	default:
		out.UserAgent = invalid
	}
	if len(p.GetPropertyRules()) > 0 {
		out.PropertyRules = map[string]privacy.Action{}
	}
	for _, r := range p.GetPropertyRules() {
		if _, dup := out.PropertyRules[r.GetKey()]; dup {
			out.PropertyRules[r.GetKey()] = invalid // a key twice: refused as invalid
			continue
		}
		out.PropertyRules[r.GetKey()] = actionFromProto(r.GetAction())
	}
	return out
}

var ipToProtoInv = map[dsrv1.PrivacyPolicy_IPHandling]bool{0: true, 1: true, 2: true, 3: true}

func actionFromProto(a dsrv1.PrivacyPolicy_PropertyAction) privacy.Action {
	switch a {
	case dsrv1.PrivacyPolicy_PROPERTY_ACTION_KEEP:
		return privacy.ActionKeep
	case dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH:
		return privacy.ActionHash
	case dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP:
		return privacy.ActionDrop
	}
	return invalid
}

var (
	actionToProto = map[privacy.Action]dsrv1.PrivacyPolicy_PropertyAction{
		privacy.ActionKeep: dsrv1.PrivacyPolicy_PROPERTY_ACTION_KEEP, privacy.ActionHash: dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH,
		privacy.ActionDrop: dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP,
	}
	ipToProto = map[privacy.IPHandling]dsrv1.PrivacyPolicy_IPHandling{
		privacy.IPKeep: dsrv1.PrivacyPolicy_IP_HANDLING_KEEP, privacy.IPTruncate: dsrv1.PrivacyPolicy_IP_HANDLING_TRUNCATE,
		privacy.IPDrop: dsrv1.PrivacyPolicy_IP_HANDLING_DROP,
	}
	uaToProto = map[privacy.UserAgentHandling]dsrv1.PrivacyPolicy_UserAgentHandling{
		privacy.UserAgentKeep: dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_KEEP, privacy.UserAgentDrop: dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_DROP,
	}
)

func kindFromProto(k dsrv1.Kind) dsr.Kind {
	return map[dsrv1.Kind]dsr.Kind{dsrv1.Kind_KIND_ACCESS: dsr.KindAccess, dsrv1.Kind_KIND_ERASURE: dsr.KindErasure,
		dsrv1.Kind_KIND_SUPPRESS: dsr.KindSuppress, dsrv1.Kind_KIND_UNSUPPRESS: dsr.KindUnsuppress}[k]
}

func kindToProto(k dsr.Kind) dsrv1.Kind {
	return map[dsr.Kind]dsrv1.Kind{dsr.KindAccess: dsrv1.Kind_KIND_ACCESS, dsr.KindErasure: dsrv1.Kind_KIND_ERASURE,
		dsr.KindSuppress: dsrv1.Kind_KIND_SUPPRESS, dsr.KindUnsuppress: dsrv1.Kind_KIND_UNSUPPRESS}[k]
}

func regulationFromProto(r dsrv1.Regulation) dsr.Regulation {
	return map[dsrv1.Regulation]dsr.Regulation{dsrv1.Regulation_REGULATION_GDPR: dsr.GDPR, dsrv1.Regulation_REGULATION_CCPA: dsr.CCPA}[r]
}

func regulationToProto(r dsr.Regulation) dsrv1.Regulation {
	return map[dsr.Regulation]dsrv1.Regulation{dsr.GDPR: dsrv1.Regulation_REGULATION_GDPR, dsr.CCPA: dsrv1.Regulation_REGULATION_CCPA}[r]
}

var stateMap = map[dsr.State]dsrv1.Request_State{
	dsr.Received: dsrv1.Request_STATE_RECEIVED, dsr.Suppressing: dsrv1.Request_STATE_SUPPRESSING, dsr.Running: dsrv1.Request_STATE_RUNNING,
	dsr.Verifying: dsrv1.Request_STATE_VERIFYING, dsr.Completed: dsrv1.Request_STATE_COMPLETED, dsr.Failed: dsrv1.Request_STATE_FAILED,
	dsr.Cancelled: dsrv1.Request_STATE_CANCELLED,
}

func stateToProto(s dsr.State) dsrv1.Request_State { return stateMap[s] }

func stateFromProto(s dsrv1.Request_State) dsr.State {
	for k, v := range stateMap {
		if v == s {
			return k
		}
	}
	return invalid
}

func pstateToProto(s dsr.PState) dsrv1.ParticipantStatus_State {
	return map[dsr.PState]dsrv1.ParticipantStatus_State{dsr.PPending: dsrv1.ParticipantStatus_STATE_PENDING,
		dsr.PRunning: dsrv1.ParticipantStatus_STATE_RUNNING, dsr.PRetrying: dsrv1.ParticipantStatus_STATE_RETRYING,
		dsr.PDone: dsrv1.ParticipantStatus_STATE_DONE, dsr.PFailed: dsrv1.ParticipantStatus_STATE_FAILED}[s]
}

// IdentifierFromProto converts an identifier (the participant client uses it too).
func identifierFromProto(id *dsrv1.Identifier) dsr.Identifier {
	return dsr.Identifier{Kind: idKindFromProto(id.GetKind()), Value: id.GetValue()}
}

func idKindFromProto(k dsrv1.Identifier_Kind) dsr.IDKind {
	switch k {
	case dsrv1.Identifier_KIND_USER_ID:
		return dsr.UserID
	case dsrv1.Identifier_KIND_ANONYMOUS_ID:
		return dsr.AnonymousID
	case dsrv1.Identifier_KIND_EMAIL:
		return dsr.Email
	}
	return invalid
}

func identifierToProto(id dsr.Identifier) *dsrv1.Identifier {
	k := map[dsr.IDKind]dsrv1.Identifier_Kind{dsr.UserID: dsrv1.Identifier_KIND_USER_ID, dsr.AnonymousID: dsrv1.Identifier_KIND_ANONYMOUS_ID,
		dsr.Email: dsrv1.Identifier_KIND_EMAIL}[id.Kind]
	return &dsrv1.Identifier{Kind: k, Value: id.Value}
}
