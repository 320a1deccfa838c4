package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// mesh is the services under the bench and what the bench talks to them with.
type mesh struct {
	dir        string // temp: certificates, secrets, logs, NATS store, binaries
	bin        string
	certs      string
	gateway    *mtls.Source // the bench's identity: the gateway forwards end users' calls
	nats       *server.Server
	natsPass   map[string]string // user → password of deploy/nats.conf
	privacyKey string
	procs      []*proc
	auth       *proc
	analytics  *proc
	dsr        *proc // nil in a dry run without the dsr service
	conns      []*grpc.ClientConn
	session    *session
}

func (m *mesh) close() {
	for _, c := range m.conns {
		c.Close()
	}
	for i := len(m.procs) - 1; i >= 0; i-- {
		m.procs[i].stop()
	}
	if m.nats != nil {
		m.nats.Shutdown()
	}
}

func (m *mesh) tls(svc string) []string {
	up := strings.ToUpper(svc)
	return []string{
		"CM_" + up + "_TLS_CERT=" + filepath.Join(m.certs, svc+".pem"),
		"CM_" + up + "_TLS_KEY=" + filepath.Join(m.certs, svc+"-key.pem"),
		"CM_" + up + "_TLS_CA=" + filepath.Join(m.certs, "ca.pem"),
	}
}

// secret writes value to a file of the temp dir (0600) and returns its path.
func (m *mesh) secret(name, value string) (string, error) {
	f := filepath.Join(m.dir, "secret-"+name)
	return f, os.WriteFile(f, []byte(value+"\n"), 0o600)
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// dial connects to a service of the mesh as the gateway.
func (m *mesh) dial(p *proc) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(credentials.NewTLS(m.gateway.ClientConfig(p.name))))
	if err != nil {
		return nil, err
	}
	m.conns = append(m.conns, conn)
	return conn, nil
}

// dsrPackage is the dsr service's command, which this checkout may not have yet.
const dsrPackage = "./services/dsr/cmd/dsr"

func hasDsr() bool {
	_, err := os.Stat(filepath.FromSlash(dsrPackage))
	return err == nil
}

// build compiles the services the bench runs into m.bin, unless -bin names prebuilt ones.
func (m *mesh) build(prebuilt string) error {
	if prebuilt != "" {
		m.bin = prebuilt
		return nil
	}
	m.bin = filepath.Join(m.dir, "bin")
	pkgs := map[string]string{"auth": "./services/auth/cmd/auth", "analytics": "./services/analytics/cmd/analytics"}
	if hasDsr() {
		pkgs["dsr"] = dsrPackage
	}
	for name, pkg := range pkgs {
		progress("building %s (%s)", name, pkg)
		out, err := exec.Command("go", "build", "-o", filepath.Join(m.bin, name), pkg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("build %s (run bench-dsr from the repository root): %w\n%s", name, err, out)
		}
	}
	return nil
}

// startNATS runs NATS in the bench's process with the project's deploy/nats.conf (its users
// and rights), storing in the temp dir: the dev server's streams and consumers belong to make
// run's services (the writer's analytics-writer-0 consumer, the PRIVACY bucket), which a
// second mesh on it would take over.
func (m *mesh) startNATS(ctx context.Context) error {
	const conf = "deploy/nats.conf"
	text, err := os.ReadFile(conf)
	if err != nil {
		return fmt.Errorf("read %s (run bench-dsr from the repository root): %w", conf, err)
	}
	// Every password the configuration reads from the environment, a random one each.
	m.natsPass = map[string]string{}
	for _, v := range regexp.MustCompile(`\$NATS_([A-Z]+)_PASSWORD`).FindAllStringSubmatch(string(text), -1) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		m.natsPass[strings.ToLower(v[1])] = hex.EncodeToString(b)
		if err := os.Setenv("NATS_"+v[1]+"_PASSWORD", m.natsPass[strings.ToLower(v[1])]); err != nil {
			return err
		}
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		return fmt.Errorf("load %s: %w", conf, err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.JetStream, opts.StoreDir = true, filepath.Join(m.dir, "nats")
	opts.NoLog, opts.NoSigs = true, true
	if m.nats, err = server.NewServer(opts); err != nil {
		return err
	}
	go m.nats.Start()
	if !m.nats.ReadyForConnections(10 * time.Second) {
		return errors.New("nats not ready")
	}
	// The event streams, as ingest creates them at start: the analytics writer only reads
	// them (and its erasures' write fence waits for the writer).
	nc, js, err := natsjs.Connect(m.nats.ClientURL(), "bench-dsr", natsjs.WithUser("admin", m.natsPass["admin"]))
	if err != nil {
		return err
	}
	defer nc.Close()
	return natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream)
}

// natsEnv is the NATS settings of service prefix (CM_<SVC>) as user, falling back to admin
// when deploy/nats.conf has no such user yet.
func (m *mesh) natsEnv(prefix, user string) ([]string, error) {
	if _, ok := m.natsPass[user]; !ok {
		progress("deploy/nats.conf has no NATS user %q yet: %s connects as admin", user, strings.ToLower(strings.TrimPrefix(prefix, "CM_")))
		user = "admin"
	}
	f, err := m.secret("nats-"+user, m.natsPass[user])
	if err != nil {
		return nil, err
	}
	return []string{prefix + "_NATS_URL=" + m.nats.ClientURL(), prefix + "_NATS_USER=" + user, prefix + "_NATS_PASSWORD_FILE=" + f}, nil
}

// postgresURL is the dev server's URL (CM_POSTGRES_URL) for database db.
func postgresURL(db string) (string, error) {
	server := os.Getenv("CM_POSTGRES_URL")
	if server == "" {
		server = "postgres://campaignmesh@127.0.0.1:15432/postgres"
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", errors.New("parse CM_POSTGRES_URL: invalid format")
	}
	u.Path = "/" + db
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// postgresDatabase makes sure db exists, dropped first when fresh; it reports whether it
// existed (and was kept).
func postgresDatabase(ctx context.Context, db string, fresh bool) (bool, error) {
	admin, err := postgresURL("postgres")
	if err != nil {
		return false, err
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return false, fmt.Errorf("postgres (run scripts/devenv.sh up): %w", err)
	}
	defer conn.Close(ctx)
	if fresh {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			return false, fmt.Errorf("drop database %s: %w", db, err)
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return false, err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			return false, fmt.Errorf("create database %s: %w", db, err)
		}
	}
	return exists, nil
}

// startAuth runs auth on its kept database <database>_auth with the key-encryption key and
// bootstrap credentials of -state-dir, all three new unless -keep finds them together and auth
// starts on them; it logs in as the bootstrap admin and returns whether auth is new (a new
// tenant).
func (m *mesh) startAuth(ctx context.Context, cfg config) (bool, error) {
	fresh := !cfg.keep
	for _, f := range []string{authKEK(cfg), authAdmin(cfg)} {
		if _, err := os.Stat(f); err != nil {
			fresh = true
		}
	}
	if fresh {
		return true, m.tryAuth(ctx, cfg, true)
	}
	err := m.tryAuth(ctx, cfg, false)
	if err == nil || ctx.Err() != nil {
		return false, err
	}
	// Kept parts that do not belong together (another -state-dir on the same database, a
	// database restored): start over rather than fail.
	progress("auth: -keep: auth did not start on the kept database and credentials (%v); starting afresh", firstLine(err))
	if m.auth != nil {
		m.auth.stop()
		m.procs = m.procs[:len(m.procs)-1]
		m.auth = nil
	}
	return true, m.tryAuth(ctx, cfg, true)
}

func authKEK(cfg config) string   { return filepath.Join(cfg.stateDir, "auth-kek") }
func authAdmin(cfg config) string { return filepath.Join(cfg.stateDir, "bootstrap", "admin.json") }

func firstLine(err error) string { return strings.SplitN(err.Error(), "\n", 2)[0] }

// tryAuth starts auth, on a new database, key and credentials when fresh, and logs in.
func (m *mesh) tryAuth(ctx context.Context, cfg config, fresh bool) error {
	kek, bootstrap := authKEK(cfg), filepath.Dir(authAdmin(cfg))
	db := cfg.database + "_auth"
	existed, err := postgresDatabase(ctx, db, fresh)
	if err != nil {
		return err
	}
	if !existed && !fresh {
		return fmt.Errorf("database %s is gone", db)
	}
	if fresh {
		progress("auth: new database %s, key-encryption key and bootstrap credentials in %s", db, cfg.stateDir)
		if err := os.RemoveAll(bootstrap); err != nil {
			return err
		}
		if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(kek, []byte("bench:"+randomKey()+"\n"), 0o600); err != nil {
			return err
		}
	} else {
		progress("auth: -keep: reusing database %s and the credentials in %s", db, cfg.stateDir)
	}
	pg, err := postgresURL(db)
	if err != nil {
		return err
	}
	p, err := m.start(ctx, "auth", append([]string{
		"CM_AUTH_POSTGRES_URL=" + pg, "CM_AUTH_BOOTSTRAP_DIR=" + bootstrap,
		"CM_AUTH_KEY_ENCRYPTION_KEYS_FILE=" + kek, "CM_AUTH_ACCESS_TOKEN_TTL=1h",
	}, m.tls("auth")...))
	if p != nil {
		m.auth = p
	}
	if err != nil {
		return err
	}
	data, err := os.ReadFile(authAdmin(cfg))
	if err != nil {
		return fmt.Errorf("auth's bootstrap credentials: %w", err)
	}
	var login authv1.LoginRequest
	if err := protojson.Unmarshal(data, &login); err != nil {
		return fmt.Errorf("auth's bootstrap credentials: %w", err)
	}
	conn, err := m.dial(p)
	if err != nil {
		return err
	}
	m.session = &session{client: authv1.NewAuthServiceClient(conn), login: &login}
	if _, err := m.session.ctx(ctx); err != nil {
		return err
	}
	progress("auth: logged in as the bootstrap admin of tenant %s (%s)", login.GetTenant(), m.session.tenant)
	return nil
}

// start runs service name from m.bin on fresh loopback ports and waits until it is healthy.
func (m *mesh) start(ctx context.Context, name string, env []string) (*proc, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	up := "CM_" + strings.ToUpper(name)
	env = append([]string{up + "_LISTEN=" + addr, up + "_ADMIN_LISTEN=" + admin}, env...)
	p, err := startProc(name, filepath.Join(m.bin, name), m.dir, env)
	if err != nil {
		return nil, err
	}
	p.addr, p.admin = addr, admin
	m.procs = append(m.procs, p)
	progress("%s: started (pid %d, gRPC %s, admin %s, log %s)", name, p.pid(), addr, admin, p.log)
	return p, p.waitHealthy(ctx, time.Minute)
}

// startAnalytics runs analytics, query API and writer in one process, on database db.
func (m *mesh) startAnalytics(ctx context.Context, db string) error {
	nats, err := m.natsEnv("CM_ANALYTICS", "analytics")
	if err != nil {
		return err
	}
	env := append([]string{
		"CM_ANALYTICS_AUTH_ADDR=" + m.auth.addr,
		"CM_ANALYTICS_CLICKHOUSE_ADDR=" + clickhouseAddr(), "CM_ANALYTICS_CLICKHOUSE_DATABASE=" + db,
		"CM_ANALYTICS_PRIVACY_KEY_FILE=" + m.privacyKey,
	}, nats...)
	for _, role := range []string{"WRITER", "READER"} {
		u, err := clickhouse.EnvUser("CM_CLICKHOUSE_" + role)
		if err != nil {
			return err
		}
		env = append(env, "CM_ANALYTICS_CLICKHOUSE_"+role+"_USER="+u.Name)
		if u.Password != "" {
			f, err := m.secret("clickhouse-"+strings.ToLower(role), u.Password)
			if err != nil {
				return err
			}
			env = append(env, "CM_ANALYTICS_CLICKHOUSE_"+role+"_PASSWORD_FILE="+f)
		}
	}
	if m.analytics, err = m.start(ctx, "analytics", append(env, m.tls("analytics")...)); err != nil {
		return err
	}
	return m.waitWriter(ctx)
}

// waitWriter waits until the analytics writer reads the event stream (its consumer exists):
// an erasure's write fence waits for the writers, so a bench without one would only time out.
func (m *mesh) waitWriter(ctx context.Context) error {
	nc, js, err := natsjs.Connect(m.nats.ClientURL(), "bench-dsr", natsjs.WithUser("admin", m.natsPass["admin"]))
	if err != nil {
		return err
	}
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if stream, err := js.Stream(ctx, natsjs.StreamName); err == nil {
			if info, err := stream.Info(ctx); err == nil && info.State.Consumers > 0 {
				return nil
			}
		}
		if err := m.analytics.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the analytics writer has no consumer on %s after 30 s; its log (%s) ends:\n%s", natsjs.StreamName, m.analytics.log, m.analytics.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startDsr runs dsr on a fresh database <database>_dsr with analytics and auth as its
// participants.
func (m *mesh) startDsr(ctx context.Context, database string) error {
	db := database + "_dsr"
	if _, err := postgresDatabase(ctx, db, true); err != nil {
		return err
	}
	pg, err := postgresURL(db)
	if err != nil {
		return err
	}
	nats, err := m.natsEnv("CM_DSR", "dsr")
	if err != nil {
		return err
	}
	kek, err := m.secret("dsr-kek", "bench:"+randomKey())
	if err != nil {
		return err
	}
	env := append([]string{
		"CM_DSR_POSTGRES_URL=" + pg, "CM_DSR_AUTH_ADDR=" + m.auth.addr,
		"CM_DSR_PRIVACY_KEY_FILE=" + m.privacyKey, "CM_DSR_KEY_ENCRYPTION_KEYS_FILE=" + kek,
		"CM_DSR_PARTICIPANTS=analytics=" + m.analytics.addr + ",auth=" + m.auth.addr,
	}, nats...)
	m.dsr, err = m.start(ctx, "dsr", append(env, m.tls("dsr")...))
	return err
}

// session holds the bootstrap admin's access token, logging in again before it expires.
type session struct {
	client authv1.AuthServiceClient
	login  *authv1.LoginRequest
	mu     sync.Mutex
	token  string
	at     time.Time
	tenant string
}

// ctx returns ctx carrying a valid access token.
func (s *session) ctx(ctx context.Context) (context.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == "" || time.Since(s.at) > 10*time.Minute {
		resp, err := s.client.Login(ctx, s.login)
		if err != nil {
			return nil, fmt.Errorf("log in to auth as %s: %w", s.login.GetEmail(), err)
		}
		s.token, s.at = resp.GetAccessToken(), time.Now()
		who, err := s.client.WhoAmI(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token), &authv1.WhoAmIRequest{})
		if err != nil {
			return nil, fmt.Errorf("whoami: %w", err)
		}
		s.tenant = who.GetTenantId()
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.token), nil
}

func clickhouseAddr() string {
	if a := os.Getenv("CM_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:19000"
}
