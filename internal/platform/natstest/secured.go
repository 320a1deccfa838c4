package natstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

// User is a NATS user of deploy/nats.conf with its password.
type User struct {
	Name, Password string
}

// Users are the credentials of a server started by StartSecured.
type Users struct {
	Admin, Ingest, Analytics, Gateway, DSR, Delivery, Billing User
}

// The passwords the config reads from the environment ($NATS_*_PASSWORD). A process has one
// set (environment variables are process-wide, so tests running in parallel share them).
var (
	usersOnce sync.Once
	users     Users
)

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testUsers sets the password variables once per process and returns the users.
func testUsers() Users {
	usersOnce.Do(func() {
		users = Users{Admin: User{"admin", secret()}, Ingest: User{"ingest", secret()}, Analytics: User{"analytics", secret()},
			Gateway: User{"gateway", secret()}, DSR: User{"dsr", secret()}, Delivery: User{"delivery", secret()},
			Billing: User{"billing", secret()}}
		for env, pw := range map[string]string{"NATS_ADMIN_PASSWORD": users.Admin.Password,
			"NATS_INGEST_PASSWORD": users.Ingest.Password, "NATS_ANALYTICS_PASSWORD": users.Analytics.Password,
			"NATS_GATEWAY_PASSWORD": users.Gateway.Password, "NATS_DSR_PASSWORD": users.DSR.Password,
			"NATS_DELIVERY_PASSWORD": users.Delivery.Password, "NATS_BILLING_PASSWORD": users.Billing.Password} {
			if err := os.Setenv(env, pw); err != nil {
				panic(err)
			}
		}
	})
	return users
}

// ConfigFile is the path of the project's NATS configuration, deploy/nats.conf.
func ConfigFile() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "nats.conf")
}

// StartSecured runs a JetStream server loaded from the real deploy/nats.conf (its users and
// subject permissions; no anonymous access) on a random loopback port, storing under a temp dir,
// and returns it with the users' credentials. It stops when the test ends.
func StartSecured(tb testing.TB) (*server.Server, Users) {
	tb.Helper()
	u := testUsers()
	opts, err := server.ProcessConfigFile(ConfigFile())
	if err != nil {
		tb.Fatalf("load %s: %v", ConfigFile(), err)
	}
	// What devenv.sh and compose pass on the command line.
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.JetStream, opts.StoreDir = true, tb.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server not ready")
	}
	tb.Cleanup(s.Shutdown)
	return s, u
}

// ConnectAs connects to url as u, taking replies on u's own inbox prefix as deploy/nats.conf
// requires, and returns the connection (closed when the test ends), its JetStream, and a
// function returning the server's asynchronous errors so far (permission violations).
func ConnectAs(tb testing.TB, url string, u User) (*nats.Conn, jetstream.JetStream, func() []error) {
	tb.Helper()
	var mu sync.Mutex
	var errs []error
	nc, err := nats.Connect(url, nats.UserInfo(u.Name, u.Password), nats.CustomInboxPrefix(natsjs.InboxPrefix(u.Name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}))
	if err != nil {
		tb.Fatalf("connect as %s: %v", u.Name, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js, func() []error { mu.Lock(); defer mu.Unlock(); return append([]error(nil), errs...) }
}
