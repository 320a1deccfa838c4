package access

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Enforcer checks every call against its rule and audits the calls whose rule says so.
type Enforcer struct {
	rules   Rules
	sink    audit.Sink
	service string
	logger  *slog.Logger
}

// NewEnforcer returns an enforcer for rules of the named service that stores audit records in
// sink (nil only where nothing is audited, e.g. in tests of the rules alone). A record the sink
// cannot store is logged in full (records hold no secrets) so it is not lost silently.
func NewEnforcer(service string, rules Rules, sink audit.Sink, logger *slog.Logger) *Enforcer {
	if logger == nil {
		logger = slog.Default()
	}
	return &Enforcer{service: service, rules: rules, sink: sink, logger: logger}
}

// SetRules replaces the rules; call it before serving.
func (e *Enforcer) SetRules(rules Rules) { e.rules = rules }

var errNoRule = apperr.New(apperr.PermissionDenied, "NO_ACCESS_RULE", "method is not available")

// Check decides whether the caller in ctx may call method.
func (e *Enforcer) Check(ctx context.Context, method string) error {
	rule := e.rules[method]
	if rule == nil {
		return errNoRule // default deny
	}
	p := authn.FromContext(ctx)
	switch req := rule.GetRequirement().(type) {
	case *accessv1.Rule_Public:
		return nil
	case *accessv1.Rule_Callers:
		svc, err := mtls.PeerService(ctx)
		// A service calls an internal RPC as itself, with no end-user credential: one that carries
		// a user's credential is relayed for that user (the gateway forwards users' calls under
		// its own identity, and is itself a caller of AppendAuditRecords), and no user may call
		// an internal RPC.
		if err != nil || !slices.Contains(req.Callers.GetServices(), svc) || p != nil {
			return apperr.New(apperr.PermissionDenied, "CALLER_NOT_ALLOWED", "caller is not allowed to call this method")
		}
		return nil
	case *accessv1.Rule_Authenticated:
		if p == nil {
			return apperr.New(apperr.Unauthenticated, "CREDENTIAL_REQUIRED", "credential required")
		}
		return nil
	case *accessv1.Rule_Permission:
		if p == nil {
			return apperr.New(apperr.Unauthenticated, "CREDENTIAL_REQUIRED", "credential required")
		}
		if !p.Has(req.Permission) {
			return apperr.New(apperr.PermissionDenied, "PERMISSION_DENIED", "permission %s required", req.Permission)
		}
		return nil
	}
	return errNoRule
}

func (e *Enforcer) audited(method string) bool {
	rule := e.rules[method]
	return e.sink != nil && rule != nil && rule.GetAudit()
}

// audit records a call when its rule says so, and every denied call of an API key (so a key
// probing beyond its scopes is visible to the tenant's admins). A successful call whose store
// took its record (audit.Take) is not recorded again.
func (e *Enforcer) audit(ctx context.Context, method string, req, resp any, err error) {
	st, _ := apperr.ToStatus(err)
	p := authn.FromContext(ctx)
	denied := st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated
	if e.sink == nil || !(e.audited(method) || (denied && p != nil && p.Kind == authn.KindAPIKey)) {
		return
	}
	if st.Code() == codes.OK && audit.Taken(ctx) {
		if w, ok := e.sink.(audit.Waker); ok {
			w.Wake()
		}
		return
	}
	rec := audit.Annotated(ctx, e.record(ctx, method, req, resp, st.Code()))
	if err := e.sink.Record(context.WithoutCancel(ctx), rec); err != nil {
		e.logger.ErrorContext(ctx, "store audit record", "err", err, "id", rec.ID, "method", rec.Method,
			"tenant_id", rec.TenantID, "actor", rec.Actor, "actor_kind", rec.ActorKind, "resource", rec.Resource,
			"outcome", rec.Outcome.String())
	}
}

// record builds the audit record of a call with the given outcome.
func (e *Enforcer) record(ctx context.Context, method string, req, resp any, outcome codes.Code) audit.Record {
	p := authn.FromContext(ctx)
	rec := audit.Record{
		ID: audit.NewID(), Time: time.Now().UTC(), Method: method, Outcome: outcome, Service: e.service,
		RequestID: telemetry.RequestID(ctx), ClientAddress: telemetry.ClientAddress(ctx),
		Resource: resourceOf(req, resp), ActorKind: "anonymous",
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		rec.TraceID = sc.TraceID().String()
	}
	rec.PeerService, _ = mtls.PeerService(ctx)
	switch {
	case p != nil:
		rec.TenantID, rec.Actor, rec.ActorKind = p.TenantID, p.Subject, string(p.Kind)
	case rec.PeerService != "" && e.rules[method].GetCallers() != nil:
		rec.Actor, rec.ActorKind = "service:"+rec.PeerService, "service"
	}
	return rec
}

// resourceOf finds the id of the resource a call acted on: the request's "id" field, else the
// "id" of the response or of a message in it (e.g. CreateApiKeyResponse.api_key.id).
func resourceOf(req, resp any) string {
	if id := idField(req); id != "" {
		return id
	}
	m, ok := resp.(proto.Message)
	if !ok || m == nil {
		return ""
	}
	if id := idField(resp); id != "" {
		return id
	}
	var found string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			found = idField(v.Message().Interface())
		}
		return found == ""
	})
	return found
}

func idField(v any) string {
	m, ok := v.(proto.Message)
	if !ok || m == nil || !m.ProtoReflect().IsValid() {
		return ""
	}
	fd := m.ProtoReflect().Descriptor().Fields().ByName("id")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return ""
	}
	return m.ProtoReflect().Get(fd).String()
}

func (e *Enforcer) withAnnotation(ctx context.Context, method string, req any) context.Context {
	if !e.audited(method) {
		return ctx
	}
	var base func() audit.Record
	ctx = audit.Begin(ctx, func() audit.Record { return base() })
	base = func() audit.Record { return e.record(ctx, method, req, nil, codes.OK) }
	return ctx
}

// UnaryInterceptor enforces rules on unary calls.
func (e *Enforcer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := e.Check(ctx, info.FullMethod); err != nil {
			e.audit(ctx, info.FullMethod, req, nil, err)
			return nil, err
		}
		ctx = e.withAnnotation(ctx, info.FullMethod, req)
		resp, err := handler(ctx, req)
		e.audit(ctx, info.FullMethod, req, resp, err)
		return resp, err
	}
}

// StreamInterceptor enforces rules on streaming calls.
func (e *Enforcer) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := e.Check(ss.Context(), info.FullMethod); err != nil {
			e.audit(ss.Context(), info.FullMethod, nil, nil, err)
			return err
		}
		err := handler(srv, ss)
		e.audit(ss.Context(), info.FullMethod, nil, nil, err)
		return err
	}
}
