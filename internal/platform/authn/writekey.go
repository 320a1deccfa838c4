package authn

import (
	"context"
	"slices"

	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// WriteKeyMetadata marks a call the gateway makes for its SDK routes (the Segment HTTP API),
// whose credential is a write key shipped inside browsers and apps: ingest then accepts only an
// API key holding events.write and nothing else (Principal.IsWriteKey), so a leaked write key
// can send events and read nothing. Clients cannot set it through the gateway (its proxy
// forwards only listed metadata), and setting it can only make a call stricter.
const WriteKeyMetadata = "x-cm-write-key"

// WriteKeyRoute reports whether the incoming call carries WriteKeyMetadata.
func WriteKeyRoute(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(WriteKeyMetadata)) > 0
}

// IsWriteKey reports whether p is an API key whose only scope is events.write.
func (p *Principal) IsWriteKey() bool {
	return p != nil && p.Kind == KindAPIKey && slices.Equal(p.Permissions, []string{rbac.EventsWrite})
}
