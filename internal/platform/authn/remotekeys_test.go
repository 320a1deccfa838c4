package authn

import (
	"context"
	"crypto/ed25519"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// keysClient answers SigningKeys with err, or else with key (as "k1").
type keysClient struct {
	Auth
	key ed25519.PublicKey
	err error
}

func (c *keysClient) SigningKeys(context.Context) (map[string]ed25519.PublicKey, error) {
	if c.err != nil {
		return nil, c.err
	}
	return map[string]ed25519.PublicKey{"k1": c.key}, nil
}

// While auth cannot be reached, a key the service has not seen yet answers UNAVAILABLE (so the
// caller retries), not "unknown key" (which would refuse a good token as invalid) — also for
// the calls that come within the refetch pause after the failed fetch.
func TestUnreachableAuthIsUnavailableNotAnUnknownKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	c := &keysClient{key: pub, err: status.Error(codes.Unavailable, "connection refused")}
	r := NewRemoteKeys(c, 0, 0)
	for i := 0; i < 2; i++ {
		if _, err := r.PublicKey(context.Background(), "k1"); status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d with auth down: %v, want Unavailable", i, err)
		}
	}
	c.err = nil
	r.fetchedAt = r.fetchedAt.Add(-DefaultKeysMinRefresh) // the pause is over
	if k, err := r.PublicKey(context.Background(), "k1"); err != nil || !k.Equal(pub) {
		t.Fatalf("after auth is back: %v", err)
	}
	if _, err := r.PublicKey(context.Background(), "forged"); err != ErrUnknownKey {
		t.Fatalf("unknown kid with auth up: %v, want ErrUnknownKey", err)
	}
}
