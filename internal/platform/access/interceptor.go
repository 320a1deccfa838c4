package access

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// AuditRecord is what the access layer reports for an audited call, allowed or denied.
type AuditRecord struct {
	// ID identifies the record wherever it travels, so redelivery never duplicates it.
	ID       string
	Time     time.Time
	Method   string
	TenantID string
	// Actor is the user or key id, or "service:<name>" for mesh callers.
	Actor         string
	ActorKind     string
	Resource      string
	Outcome       codes.Code
	RequestID     string
	TraceID       string
	ClientAddress string
	// PeerService is the mesh identity that forwarded the call (e.g. "gateway").
	PeerService string
	// Service is the service that handled the call.
	Service string
}

// Auditor receives one record per audited call.
type Auditor interface {
	Record(ctx context.Context, rec AuditRecord)
}

// LogAuditor writes audit records as structured log lines ("audit" messages).
type LogAuditor struct{ Logger *slog.Logger }

// Record implements Auditor.
func (a LogAuditor) Record(ctx context.Context, r AuditRecord) {
	a.Logger.InfoContext(ctx, "audit", "id", r.ID, "method", r.Method, "tenant_id", r.TenantID, "actor", r.Actor,
		"actor_kind", r.ActorKind, "resource", r.Resource, "peer_service", r.PeerService, "outcome", r.Outcome.String())
}

// annotation lets a handler say what the access layer cannot know: who logged in, and on
// what. It is installed in the context of every audited call, and holds the call's record when
// the handler takes it (TakeRecord).
type annotation struct {
	mu                        sync.Mutex
	tenantID, actor, resource string
	set                       bool
	// base builds the record of the work in progress as a success; taken says the handler
	// stored it with its change.
	base  func() AuditRecord
	taken bool
}

type annotationKey struct{}

// Annotate records, for the audit record of the current call, the tenant and actor it concerns
// (e.g. the account of a login, which has no credential yet) and the resource acted on. Empty
// values keep what the access layer found. It does nothing outside an audited call.
func Annotate(ctx context.Context, tenantID, actor, resource string) {
	a, ok := ctx.Value(annotationKey{}).(*annotation)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tenantID, a.actor, a.resource, a.set = tenantID, actor, resource, true
}

// TakeRecord returns the audit record of the audited work in ctx — an audited call, or work
// started with WithAuditRecord — as a success on resource (in tenantID when the record names
// no tenant), with a new id. A store writes it in the transaction of the change it audits, so
// a crash after the commit cannot lose it; the access layer then records the call itself only
// when it fails. It returns false outside audited work.
func TakeRecord(ctx context.Context, tenantID, resource string) (AuditRecord, bool) {
	a, ok := ctx.Value(annotationKey{}).(*annotation)
	if !ok || a.base == nil {
		return AuditRecord{}, false
	}
	rec := a.base()
	a.mu.Lock()
	a.taken = true
	a.mu.Unlock()
	rec.ID, rec.Time, rec.Resource = newID(), time.Now().UTC(), resource
	if rec.TenantID == "" {
		rec.TenantID = tenantID
	}
	return rec, true
}

// WithAuditRecord starts audited work outside a call (e.g. a scheduler's): TakeRecord in ctx
// builds its records from what record returns when it is called.
func WithAuditRecord(ctx context.Context, record func() AuditRecord) context.Context {
	return context.WithValue(ctx, annotationKey{}, &annotation{base: record})
}

// Waker is an Auditor that delivers records stored by TakeRecord's callers; Wake tells it that
// some are waiting.
type Waker interface{ Wake() }

// Enforcer checks every call against its rule and audits the calls whose rule says so.
type Enforcer struct {
	rules   Rules
	auditor Auditor
	service string
}

// NewEnforcer returns an enforcer for rules of the named service. auditor may be nil when
// nothing is audited.
func NewEnforcer(service string, rules Rules, auditor Auditor) *Enforcer {
	return &Enforcer{service: service, rules: rules, auditor: auditor}
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
		if err != nil || !slices.Contains(req.Callers.GetServices(), svc) {
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
	return e.auditor != nil && rule != nil && rule.GetAudit()
}

// audit records a call when its rule says so, and every denied call of an API key (so a key
// probing beyond its scopes is visible to the tenant's admins). A successful call whose handler
// took its record (TakeRecord) is not recorded again.
func (e *Enforcer) audit(ctx context.Context, method string, req, resp any, err error) {
	st, _ := apperr.ToStatus(err)
	p := authn.FromContext(ctx)
	denied := st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated
	if e.auditor == nil || !(e.audited(method) || (denied && p != nil && p.Kind == authn.KindAPIKey)) {
		return
	}
	if a, ok := ctx.Value(annotationKey{}).(*annotation); ok && st.Code() == codes.OK {
		a.mu.Lock()
		taken := a.taken
		a.mu.Unlock()
		if taken {
			if w, ok := e.auditor.(Waker); ok {
				w.Wake()
			}
			return
		}
	}
	e.auditor.Record(ctx, e.record(ctx, method, req, resp, st.Code()))
}

// record builds the audit record of a call with the given outcome.
func (e *Enforcer) record(ctx context.Context, method string, req, resp any, outcome codes.Code) AuditRecord {
	p := authn.FromContext(ctx)
	rec := AuditRecord{
		ID: newID(), Time: time.Now().UTC(), Method: method, Outcome: outcome, Service: e.service,
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
	if a, ok := ctx.Value(annotationKey{}).(*annotation); ok {
		a.mu.Lock()
		if a.set {
			if a.tenantID != "" {
				rec.TenantID = a.tenantID
			}
			if a.actor != "" {
				rec.Actor = a.actor
				if rec.ActorKind == "anonymous" {
					rec.ActorKind = "user" // e.g. the account that just logged in
				}
			}
			if a.resource != "" {
				rec.Resource = a.resource
			}
		}
		a.mu.Unlock()
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

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (e *Enforcer) withAnnotation(ctx context.Context, method string, req any) context.Context {
	if !e.audited(method) {
		return ctx
	}
	a := &annotation{}
	ctx = context.WithValue(ctx, annotationKey{}, a)
	a.base = func() AuditRecord { return e.record(ctx, method, req, nil, codes.OK) }
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
