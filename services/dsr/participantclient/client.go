// Package participantclient implements the dsr domain's Participant port with the
// ParticipantService of another service, over the mesh's mTLS. Participants come from
// configuration (-participants name=addr,…): adding a store is configuration, not code.
package participantclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/dsr"
)

// Spec is one configured participant: its name (also its mesh identity) and address.
type Spec struct{ Name, Addr string }

// ParseSpecs reads "name=addr,name2=addr2" (empty: none).
func ParseSpecs(s string) ([]Spec, error) {
	var out []Spec
	seen := map[string]bool{}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, addr, ok := strings.Cut(entry, "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("participant %q: want name=host:port", entry)
		}
		if seen[name] {
			return nil, fmt.Errorf("participant %q appears twice", name)
		}
		seen[name] = true
		out = append(out, Spec{Name: name, Addr: addr})
	}
	return out, nil
}

// Client is a participant reached over gRPC.
type Client struct {
	name   string
	client dsrv1.ParticipantServiceClient
}

var _ dsr.Participant = (*Client)(nil)

// New returns the participant name calling over conn.
func New(name string, conn grpc.ClientConnInterface) *Client {
	return &Client{name: name, client: dsrv1.NewParticipantServiceClient(conn)}
}

// Dial connects to the participant with the dsr service's certificate, accepting only a server
// whose SPIFFE id names the participant.
func Dial(spec Spec, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(spec.Addr, spec.Name, certs)
	if err != nil {
		return nil, nil, err
	}
	return New(spec.Name, conn), conn, nil
}

// Name implements dsr.Participant.
func (c *Client) Name() string { return c.name }

// callError turns a gRPC error into the domain's: the code, and the message kept only as the
// cause (dsr never shows it).
func callError(what string, err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	return &dsr.CallError{Code: audit.CodeName(st.Code()), Err: fmt.Errorf("%s: %w", what, err)}
}

func toProto(ids []dsr.Identifier) []*dsrv1.Identifier {
	out := make([]*dsrv1.Identifier, 0, len(ids))
	for _, id := range ids {
		k := map[dsr.IDKind]dsrv1.Identifier_Kind{dsr.UserID: dsrv1.Identifier_KIND_USER_ID,
			dsr.AnonymousID: dsrv1.Identifier_KIND_ANONYMOUS_ID, dsr.Email: dsrv1.Identifier_KIND_EMAIL}[id.Kind]
		out = append(out, &dsrv1.Identifier{Kind: k, Value: id.Value})
	}
	return out
}

// Resolve implements dsr.Participant.
func (c *Client) Resolve(ctx context.Context, tenantID, requestID string, ids []dsr.Identifier) ([]dsr.Identifier, error) {
	resp, err := c.client.ResolveSubject(ctx, &dsrv1.ResolveSubjectRequest{TenantId: tenantID, DsrRequest: requestID, Identifiers: toProto(ids)})
	if err != nil {
		return nil, callError("resolve subject", err)
	}
	var out []dsr.Identifier
	for _, id := range resp.GetLinked() {
		var k dsr.IDKind
		switch id.GetKind() {
		case dsrv1.Identifier_KIND_USER_ID:
			k = dsr.UserID
		case dsrv1.Identifier_KIND_ANONYMOUS_ID:
			k = dsr.AnonymousID
		case dsrv1.Identifier_KIND_EMAIL:
			k = dsr.Email
		default:
			continue
		}
		if v := id.GetValue(); v != "" && len(v) <= 4*dsr.MaxValueLen {
			out = append(out, dsr.Identifier{Kind: k, Value: v})
		}
	}
	return out, nil
}

// Export implements dsr.Participant.
func (c *Client) Export(ctx context.Context, tenantID, requestID string, ids []dsr.Identifier, emit func(string, []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.client.ExportSubject(ctx, &dsrv1.ExportSubjectRequest{TenantId: tenantID, DsrRequest: requestID, Identifiers: toProto(ids)})
	if err != nil {
		return callError("export subject", err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return callError("export subject", err)
		}
		data, err := protojson.Marshal(msg.GetData())
		if err != nil {
			return fmt.Errorf("encode exported record: %w", err)
		}
		if err := emit(msg.GetType(), data); err != nil {
			return err
		}
	}
}

func erasure(s *dsrv1.ErasureStatus) dsr.ErasureStatus {
	return dsr.ErasureStatus{Done: s.GetDone(), Counts: s.GetCounts(), Remaining: s.GetRemaining()}
}

// StartErasure implements dsr.Participant.
func (c *Client) StartErasure(ctx context.Context, tenantID, requestID string, ids []dsr.Identifier) (dsr.ErasureStatus, error) {
	resp, err := c.client.StartErasure(ctx, &dsrv1.StartErasureRequest{TenantId: tenantID, DsrRequest: requestID, Identifiers: toProto(ids)})
	if err != nil {
		return dsr.ErasureStatus{}, callError("start erasure", err)
	}
	return erasure(resp), nil
}

// GetErasure implements dsr.Participant.
func (c *Client) GetErasure(ctx context.Context, tenantID, requestID string) (dsr.ErasureStatus, error) {
	resp, err := c.client.GetErasure(ctx, &dsrv1.GetErasureRequest{TenantId: tenantID, DsrRequest: requestID})
	if err != nil {
		return dsr.ErasureStatus{}, callError("get erasure", err)
	}
	return erasure(resp), nil
}
