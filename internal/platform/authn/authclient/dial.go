package authclient

import (
	"log/slog"

	"google.golang.org/grpc"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
)

// Remote is what a service other than auth holds of it: the client (audit delivery), the
// verifier of callers' credentials and the revocation list that keeps the verifier current
// (run it while serving).
type Remote struct {
	Client      authv1.AuthServiceClient
	Verifier    authn.Verifier
	Revocations *authn.RevocationList
	conn        *grpc.ClientConn
}

// Dial connects to the auth service at addr over mTLS with certs (the connection is made on
// first use). Close releases it.
func Dial(addr string, certs *mtls.Source, logger *slog.Logger) (*Remote, error) {
	conn, err := grpcclient.Dial(addr, "auth", certs)
	if err != nil {
		return nil, err
	}
	r := &Remote{Client: authv1.NewAuthServiceClient(conn), conn: conn}
	r.Verifier, r.Revocations = NewVerifier(r.Client)
	r.Revocations.WithLogger(logger)
	return r, nil
}

// Close closes the connection.
func (r *Remote) Close() { _ = r.conn.Close() }
