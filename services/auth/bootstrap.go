package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// The accounts the first start creates.
const (
	BootstrapOperatorEmail = "operator@campaignmesh.local"
	BootstrapTenantSlug    = "acme"
	BootstrapAdminEmail    = "admin@acme.example"
)

// BootstrapAccounts are created together on the first start.
type BootstrapAccounts struct {
	Operator     User
	OperatorHash string
	Tenant       Tenant
	Admin        User
	AdminHash    string
}

// loginFile is a login request body, ready for `curl -d @file` and `grpcurl -d @`.
type loginFile struct {
	Tenant   string `json:"tenant,omitempty"`
	Email    string `json:"email"`
	Password string `json:"password"`
}

// Bootstrap creates, on the very first start, the platform operator, a first tenant "acme" and
// its admin, with random passwords. The credentials go only to dir, as operator.json and
// admin.json (mode 0600) — never to logs. Later starts, and replicas racing this one, do
// nothing. It returns the files it wrote.
func (s *Service) Bootstrap(ctx context.Context, dir string) ([]string, error) {
	opPass, adminPass := randomPassword(), randomPassword()
	opHash, err := HashPassword(opPass)
	if err != nil {
		return nil, err
	}
	adminHash, err := HashPassword(adminPass)
	if err != nil {
		return nil, err
	}
	// Write the files first (under temporary names) so that created accounts can never
	// exist without their credentials having been handed over.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create bootstrap dir: %w", err)
	}
	files := map[string]loginFile{
		filepath.Join(dir, "operator.json"): {Email: BootstrapOperatorEmail, Password: opPass},
		filepath.Join(dir, "admin.json"):    {Tenant: BootstrapTenantSlug, Email: BootstrapAdminEmail, Password: adminPass},
	}
	for path, body := range files {
		data, _ := json.MarshalIndent(body, "", "  ")
		if err := os.WriteFile(path+".tmp", append(data, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("write bootstrap credentials: %w", err)
		}
	}
	created, err := s.store.Bootstrap(ctx, BootstrapAccounts{
		Operator:     User{Email: BootstrapOperatorEmail, DisplayName: "Platform operator", Role: rbac.PlatformOperator, State: UserActive},
		OperatorHash: opHash,
		Tenant:       Tenant{Slug: BootstrapTenantSlug, DisplayName: "Acme", State: TenantActive},
		Admin:        User{Email: BootstrapAdminEmail, DisplayName: "Acme admin", Role: rbac.Admin, State: UserActive},
		AdminHash:    adminHash,
	})
	var written []string
	for path := range files {
		if err == nil && created {
			if rerr := os.Rename(path+".tmp", path); rerr != nil {
				return nil, fmt.Errorf("publish bootstrap credentials: %w", rerr)
			}
			written = append(written, path)
		} else {
			_ = os.Remove(path + ".tmp")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bootstrap accounts: %w", err)
	}
	return written, nil
}

func randomPassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
