// Package e2e starts the mesh as real processes (auth and gateway, built from this tree) on a
// fresh PostgreSQL database with freshly issued certificates, and drives it as a user would:
// REST with curl-like requests and gRPC through the gateway, over real TLS and mTLS.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
)

// mesh is one running auth + gateway.
type mesh struct {
	dir      string
	certs    string
	gateway  string // host:port of the public listener
	httpc    *http.Client
	otlp     *otlpReceiver
	bootstrp string
	// authAdmin serves auth's /metrics and /healthz.
	authAdmin string
	// admins are the admin (/metrics, /healthz) addresses of the mesh services, by name.
	admins map[string]string
	// clickhouseDB is the analytics database of this mesh.
	clickhouseDB string
	// cluster is the ClickHouse cluster of analytics' shards (meshConfig.cluster); nil: the dev
	// server.
	cluster *chtest.Cluster
	procs   map[string]*proc
	// natsURL and natsAdmin reach the mesh's NATS as its admin user.
	natsURL   string
	natsAdmin natstest.User
	// privacyKey is the file of the privacy key ingest, analytics and dsr share.
	privacyKey string
	// sendgrid, twilio and stripe are the provider stand-ins' origins (meshConfig.providers).
	sendgrid, twilio, stripe string
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// handedOut are the addresses freePort gave: tests run in parallel, and a port freed by one
// test's probe must not be given to another test's process too.
var (
	handedOutMu sync.Mutex
	handedOut   = map[string]bool{}
)

func freePort(t testing.TB) string {
	t.Helper()
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !handedOut[addr] {
			handedOut[addr] = true
			return addr
		}
	}
}

// The mesh's binaries are built once per test run, into binDir, by one go build (which links
// them in parallel); every test's mesh runs the same files.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bin is the path of a built binary (auth, gateway, ingest, analytics, campaigns, dsr, delivery, cmesh, standin).
func bin(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "cm-e2e-bin-"); buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "../services/auth/cmd/auth",
			"../gateway/cmd/gateway", "../services/ingest/cmd/ingest", "../services/analytics/cmd/analytics",
			"../services/campaigns/cmd/campaigns", "../services/dsr/cmd/dsr", "../services/delivery/cmd/delivery", "../services/billing/cmd/billing", "../cmd/cmesh", "../cmd/standin")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build the mesh: %v", buildErr)
	}
	return filepath.Join(binDir, name)
}

// TestMain removes the built binaries. Every test starts its own mesh (own databases, NATS,
// certificates and ports) and calls t.Parallel, so -parallel (default GOMAXPROCS) meshes run
// at once: the tests mostly wait on conditions, and the package's time is the long pole of
// make test.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// logWriter keeps a process's output for the failure report.
type logWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
func (w *logWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.buf.String() }

// proc is a running service process that a test may kill and start again.
type proc struct {
	t    testing.TB
	bin  string
	args []string
	env  []string
	logs *logWriter
	mu   sync.Mutex
	cmd  *exec.Cmd
	// exited is closed when the process of cmd has ended (and been waited for).
	exited chan struct{}
}

func startProcess(t testing.TB, bin string, env []string) *proc {
	t.Helper()
	return startProcessArgs(t, bin, env)
}

// startProcessArgs is startProcess with command-line arguments.
func startProcessArgs(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, bin: bin, args: args, env: env, logs: &logWriter{}}
	p.start()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s logs ---\n%s", filepath.Base(bin), p.logs)
		}
	})
	return p
}

// start runs the binary (again), with extra environment on top of the original.
func (p *proc) start(extraEnv ...string) {
	p.t.Helper()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(append(os.Environ(), p.env...), extraEnv...)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	// One Wait per process (a second returns at once, before the process is gone).
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited
}

// kill9 kills the process without warning and waits for it to be gone.
func (p *proc) kill9() {
	cmd, exited := p.current()
	_ = cmd.Process.Kill()
	<-exited
}

// wait waits for the process to exit by itself (bounded).
func (p *proc) wait(limit time.Duration) bool {
	_, exited := p.current()
	select {
	case <-exited:
		return true
	case <-time.After(limit):
		return false
	}
}

// alive tells whether the process runs (it was not killed and has not exited).
func (p *proc) alive() bool {
	_, exited := p.current()
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// stop interrupts the process and waits for a graceful exit.
func (p *proc) stop() {
	cmd, exited := p.current()
	if !p.alive() {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		// A Go process prints every goroutine's stack on SIGQUIT: where it hangs, in its logs.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		p.t.Errorf("%s did not stop within 15 s of SIGINT (its goroutines at SIGQUIT are in its logs)", filepath.Base(p.bin))
	}
}

func waitFor(t testing.TB, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	meshtest.Eventually(t, timeout, ok, "%s not ready", what)
}

func startMesh(t testing.TB, gatewayEnv ...string) *mesh {
	t.Helper()
	return startMeshWith(t, meshConfig{gatewayEnv: gatewayEnv})
}

// meshConfig is what a test changes in the mesh it starts; the zero value is the usual mesh:
// one analytics process (query API and writer) on the dev ClickHouse server.
type meshConfig struct {
	// clickhouse are the addresses analytics reaches its ClickHouse shards at, in shard order
	// (proxies, in fault tests). Default: the servers of cluster, or the dev server.
	clickhouse []string
	// cluster, when set, is the ClickHouse cluster analytics writes into (its shards, its
	// users, a fresh database on every server): chtest.StartCluster's. Default: the dev server.
	cluster *chtest.Cluster
	// writers is the number of analytics writers (default 1): analytics is writer 0 of them,
	// and writer i > 0 runs alone (-roles writer) as the process analytics-writer-<i>.
	writers int
	// splitWriter runs writer 0 alone too, as analytics-writer-0, and analytics as the query
	// API only, so a test can stop the writer while the API (and its participant) serves.
	splitWriter bool
	// gatewayEnv is added to the gateway's environment.
	gatewayEnv []string
	// providers runs the SendGrid and Twilio stand-ins (cmd/standin) and has delivery send
	// through them, with tracked links and provider webhooks through the gateway.
	providers bool
	// deliveryEnv is added to delivery's environment.
	deliveryEnv []string
	// billingEnv is added to billing's environment.
	billingEnv []string
}

// startMeshWith starts the mesh as cfg says.
func startMeshWith(t testing.TB, cfg meshConfig) *mesh {
	t.Helper()
	m := &mesh{dir: t.TempDir(), procs: map[string]*proc{}, admins: map[string]string{}, cluster: cfg.cluster}
	if cfg.writers < 1 {
		cfg.writers = 1
	}
	if cfg.clickhouse == nil {
		cfg.clickhouse = []string{chtest.Addr()}
		if cfg.cluster != nil {
			cfg.clickhouse = cfg.cluster.Addrs
		}
	}
	m.certs = filepath.Join(m.dir, "certs")
	if _, err := mtls.DevPKI(m.certs, []string{"auth", "ingest", "analytics", "campaigns", "dsr", "delivery", "billing", "gateway"}); err != nil {
		t.Fatal(err)
	}
	m.bootstrp = filepath.Join(m.dir, "bootstrap")
	m.otlp = startOTLPReceiver(t)
	otel := []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + m.otlp.addr, "OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_TRACES_SAMPLER=always_on",
	}
	authAddr, authAdmin := freePort(t), freePort(t)
	m.authAdmin = authAdmin
	m.admins["auth"] = authAdmin
	c := func(name string) string { return filepath.Join(m.certs, name) }
	m.procs["auth"] = startProcess(t, bin(t, "auth"), append([]string{
		"CM_AUTH_LISTEN=" + authAddr, "CM_AUTH_ADMIN_LISTEN=" + authAdmin,
		"CM_AUTH_POSTGRES_URL=" + pgtest.NewDatabase(t),
		"CM_AUTH_TLS_CERT=" + c("auth.pem"), "CM_AUTH_TLS_KEY=" + c("auth-key.pem"), "CM_AUTH_TLS_CA=" + c("ca.pem"),
		"CM_AUTH_BOOTSTRAP_DIR=" + m.bootstrp,
		"CM_AUTH_KEY_ENCRYPTION_KEYS=e2e:" + randomKEK(),
	}, otel...))
	waitFor(t, "auth", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + authAdmin + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	// NATS with the real deploy/nats.conf: each process connects as its own user.
	natsSrv, natsUsers := natstest.StartSecured(t)
	natsURL := natsSrv.ClientURL()
	m.natsURL, m.natsAdmin = natsURL, natsUsers.Admin
	secret := func(name, value string) string {
		f := filepath.Join(m.dir, "secret-"+name)
		if err := os.WriteFile(f, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// One privacy key for ingest, analytics, dsr and delivery: they must hash identifiers alike.
	m.privacyKey = secret("privacy-key", randomKEK())
	ingestAddr, ingestAdmin := freePort(t), freePort(t)
	m.procs["ingest"] = startProcess(t, bin(t, "ingest"), append([]string{
		"CM_INGEST_LISTEN=" + ingestAddr, "CM_INGEST_ADMIN_LISTEN=" + ingestAdmin, "CM_INGEST_NATS_URL=" + natsURL,
		"CM_INGEST_NATS_USER=" + natsUsers.Ingest.Name, "CM_INGEST_NATS_PASSWORD_FILE=" + secret("nats-ingest", natsUsers.Ingest.Password),
		"CM_INGEST_AUTH_ADDR=" + authAddr, "CM_INGEST_PRIVACY_KEY_FILE=" + m.privacyKey,
		"CM_INGEST_TLS_CERT=" + c("ingest.pem"), "CM_INGEST_TLS_KEY=" + c("ingest-key.pem"), "CM_INGEST_TLS_CA=" + c("ca.pem"),
	}, otel...))
	m.admins["ingest"] = ingestAdmin
	waitFor(t, "ingest", 30*time.Second, func() bool { return httpOK("http://" + ingestAdmin + "/healthz") })
	// ClickHouse as analytics' writer and reader users (.state/env names them, or the cluster).
	writerUser, readerUser := chtest.Writer(t), chtest.Reader(t)
	if cfg.cluster != nil {
		m.clickhouseDB = cfg.cluster.NewDatabase(t)
		writerUser, readerUser = cfg.cluster.Writer, cfg.cluster.Reader
	} else {
		m.clickhouseDB = chtest.NewDatabase(t)
	}
	chUsers := []string{}
	for _, u := range []struct {
		role string
		user chtest.User
	}{{"WRITER", writerUser}, {"READER", readerUser}} {
		chUsers = append(chUsers, "CM_ANALYTICS_CLICKHOUSE_"+u.role+"_USER="+u.user.Name)
		if u.user.Password != "" {
			chUsers = append(chUsers, "CM_ANALYTICS_CLICKHOUSE_"+u.role+"_PASSWORD_FILE="+secret("clickhouse-"+u.role, u.user.Password))
		}
	}
	// What every analytics process shares: its certificate, NATS, ClickHouse and the writers.
	analyticsEnv := append([]string{
		"CM_ANALYTICS_TLS_CERT=" + c("analytics.pem"), "CM_ANALYTICS_TLS_KEY=" + c("analytics-key.pem"), "CM_ANALYTICS_TLS_CA=" + c("ca.pem"),
		"CM_ANALYTICS_NATS_URL=" + natsURL,
		"CM_ANALYTICS_CLICKHOUSE_ADDR=" + cfg.clickhouse[0], "CM_ANALYTICS_CLICKHOUSE_DATABASE=" + m.clickhouseDB,
		"CM_ANALYTICS_WRITER_MAX_WAIT=200ms",
		"CM_ANALYTICS_NATS_USER=" + natsUsers.Analytics.Name, "CM_ANALYTICS_NATS_PASSWORD_FILE=" + secret("nats-analytics", natsUsers.Analytics.Password),
		"CM_ANALYTICS_PRIVACY_KEY_FILE=" + m.privacyKey,
	}, append(chUsers, otel...)...)
	if len(cfg.clickhouse) > 1 {
		analyticsEnv = append(analyticsEnv, "CM_ANALYTICS_CLICKHOUSE_SHARDS="+strings.Join(cfg.clickhouse, ","))
	}
	if cfg.writers > 1 {
		analyticsEnv = append(analyticsEnv, fmt.Sprintf("CM_ANALYTICS_WRITER_COUNT=%d", cfg.writers))
	}
	if cfg.splitWriter { // writer 0 alone, started first: it migrates the store the API waits for
		admin := freePort(t)
		m.procs["analytics-writer-0"] = startProcess(t, bin(t, "analytics"), append([]string{
			"CM_ANALYTICS_ROLES=writer", "CM_ANALYTICS_WRITER_INDEX=0", "CM_ANALYTICS_ADMIN_LISTEN=" + admin,
		}, analyticsEnv...))
		m.admins["analytics-writer-0"] = admin
		waitFor(t, "analytics-writer-0", 30*time.Second, func() bool { return httpOK("http://" + admin + "/healthz") })
	}
	analyticsAddr, analyticsAdmin := freePort(t), freePort(t)
	apiEnv := []string{"CM_ANALYTICS_LISTEN=" + analyticsAddr, "CM_ANALYTICS_AUTH_ADDR=" + authAddr, "CM_ANALYTICS_ADMIN_LISTEN=" + analyticsAdmin}
	if cfg.splitWriter {
		apiEnv = append(apiEnv, "CM_ANALYTICS_ROLES=api")
	}
	m.procs["analytics"] = startProcess(t, bin(t, "analytics"), append(apiEnv, analyticsEnv...))
	m.admins["analytics"] = analyticsAdmin
	waitFor(t, "analytics", 30*time.Second, func() bool { return httpOK("http://" + analyticsAdmin + "/healthz") })
	// The other writers, each alone in its process; analytics (writer 0) has migrated every
	// shard by now. A restarted writer keeps its admin address, which names it in its lease.
	for i := 1; i < cfg.writers; i++ {
		name, admin := fmt.Sprintf("analytics-writer-%d", i), freePort(t)
		m.procs[name] = startProcess(t, bin(t, "analytics"), append([]string{
			"CM_ANALYTICS_ROLES=writer", fmt.Sprintf("CM_ANALYTICS_WRITER_INDEX=%d", i), "CM_ANALYTICS_ADMIN_LISTEN=" + admin,
		}, analyticsEnv...))
		m.admins[name] = admin
		waitFor(t, name, 30*time.Second, func() bool { return httpOK("http://" + admin + "/healthz") })
	}

	campaignsAddr, campaignsAdmin := freePort(t), freePort(t)
	m.procs["campaigns"] = startProcess(t, bin(t, "campaigns"), append([]string{
		"CM_CAMPAIGNS_LISTEN=" + campaignsAddr, "CM_CAMPAIGNS_ADMIN_LISTEN=" + campaignsAdmin,
		"CM_CAMPAIGNS_POSTGRES_URL=" + pgtest.NewDatabase(t), "CM_CAMPAIGNS_AUTH_ADDR=" + authAddr, "CM_CAMPAIGNS_ANALYTICS_ADDR=" + analyticsAddr,
		"CM_CAMPAIGNS_TLS_CERT=" + c("campaigns.pem"), "CM_CAMPAIGNS_TLS_KEY=" + c("campaigns-key.pem"), "CM_CAMPAIGNS_TLS_CA=" + c("ca.pem"),
		"CM_CAMPAIGNS_SCHEDULER_INTERVAL=200ms", "CM_CAMPAIGNS_BUDGET_INTERVAL=1s",
	}, otel...))
	m.admins["campaigns"] = campaignsAdmin
	waitFor(t, "campaigns", 30*time.Second, func() bool { return httpOK("http://" + campaignsAdmin + "/healthz") })

	m.gateway = freePort(t)
	deliveryEnv, billingEnv := cfg.deliveryEnv, cfg.billingEnv
	if cfg.providers {
		d, b := m.startProviders(t, secret)
		deliveryEnv, billingEnv = append(d, deliveryEnv...), append(b, billingEnv...)
	}
	deliveryAddr, deliveryAdmin := freePort(t), freePort(t)
	m.procs["delivery"] = startProcess(t, bin(t, "delivery"), append(append([]string{
		"CM_DELIVERY_LISTEN=" + deliveryAddr, "CM_DELIVERY_ADMIN_LISTEN=" + deliveryAdmin,
		"CM_DELIVERY_POSTGRES_URL=" + pgtest.NewDatabase(t), "CM_DELIVERY_AUTH_ADDR=" + authAddr, "CM_DELIVERY_ANALYTICS_ADDR=" + analyticsAddr,
		"CM_DELIVERY_TLS_CERT=" + c("delivery.pem"), "CM_DELIVERY_TLS_KEY=" + c("delivery-key.pem"), "CM_DELIVERY_TLS_CA=" + c("ca.pem"),
		"CM_DELIVERY_NATS_URL=" + natsURL, "CM_DELIVERY_NATS_USER=" + natsUsers.Delivery.Name,
		"CM_DELIVERY_NATS_PASSWORD_FILE=" + secret("nats-delivery", natsUsers.Delivery.Password),
		"CM_DELIVERY_PRIVACY_KEY_FILE=" + m.privacyKey, "CM_DELIVERY_CAMPAIGNS_ADDR=" + campaignsAddr, "CM_DELIVERY_INGEST_ADDR=" + ingestAddr,
	}, otel...), deliveryEnv...))
	m.admins["delivery"] = deliveryAdmin
	waitFor(t, "delivery", 30*time.Second, func() bool { return httpOK("http://" + deliveryAdmin + "/healthz") })

	dsrAddr, dsrAdmin := freePort(t), freePort(t)
	m.procs["dsr"] = startProcess(t, bin(t, "dsr"), append([]string{
		"CM_DSR_LISTEN=" + dsrAddr, "CM_DSR_ADMIN_LISTEN=" + dsrAdmin,
		"CM_DSR_POSTGRES_URL=" + pgtest.NewDatabase(t), "CM_DSR_AUTH_ADDR=" + authAddr,
		"CM_DSR_NATS_URL=" + natsURL, "CM_DSR_NATS_USER=" + natsUsers.DSR.Name,
		"CM_DSR_NATS_PASSWORD_FILE=" + secret("nats-dsr", natsUsers.DSR.Password),
		"CM_DSR_PRIVACY_KEY_FILE=" + m.privacyKey, "CM_DSR_KEY_ENCRYPTION_KEYS_FILE=" + secret("dsr-kek", "e2e:"+randomKEK()),
		"CM_DSR_PARTICIPANTS=analytics=" + analyticsAddr + ",auth=" + authAddr + ",delivery=" + deliveryAddr,
		"CM_DSR_TLS_CERT=" + c("dsr.pem"), "CM_DSR_TLS_KEY=" + c("dsr-key.pem"), "CM_DSR_TLS_CA=" + c("ca.pem"),
	}, otel...))
	m.admins["dsr"] = dsrAdmin
	waitFor(t, "dsr", 30*time.Second, func() bool { return httpOK("http://" + dsrAdmin + "/healthz") })

	billingAddr, billingAdmin := freePort(t), freePort(t)
	m.procs["billing"] = startProcess(t, bin(t, "billing"), append(append([]string{
		"CM_BILLING_LISTEN=" + billingAddr, "CM_BILLING_ADMIN_LISTEN=" + billingAdmin,
		"CM_BILLING_POSTGRES_URL=" + pgtest.NewDatabase(t), "CM_BILLING_AUTH_ADDR=" + authAddr,
		"CM_BILLING_ANALYTICS_ADDR=" + analyticsAddr, "CM_BILLING_DELIVERY_ADDR=" + deliveryAddr,
		"CM_BILLING_NATS_URL=" + natsURL, "CM_BILLING_NATS_USER=" + natsUsers.Billing.Name,
		"CM_BILLING_NATS_PASSWORD_FILE=" + secret("nats-billing", natsUsers.Billing.Password),
		"CM_BILLING_TLS_CERT=" + c("billing.pem"), "CM_BILLING_TLS_KEY=" + c("billing-key.pem"), "CM_BILLING_TLS_CA=" + c("ca.pem"),
		"CM_BILLING_METER_INTERVAL=1s",
	}, otel...), billingEnv...))
	m.admins["billing"] = billingAdmin
	waitFor(t, "billing", 30*time.Second, func() bool { return httpOK("http://" + billingAdmin + "/healthz") })

	m.procs["gateway"] = startProcess(t, bin(t, "gateway"), append(append([]string{
		"CM_GATEWAY_LISTEN=" + m.gateway, "CM_GATEWAY_ADMIN_LISTEN=" + freePort(t), "CM_GATEWAY_AUTH_ADDR=" + authAddr,
		"CM_GATEWAY_INGEST_ADDR=" + ingestAddr, "CM_GATEWAY_ANALYTICS_ADDR=" + analyticsAddr, "CM_GATEWAY_CAMPAIGNS_ADDR=" + campaignsAddr, "CM_GATEWAY_DSR_ADDR=" + dsrAddr,
		"CM_GATEWAY_DELIVERY_ADDR=" + deliveryAddr, "CM_GATEWAY_BILLING_ADDR=" + billingAddr,
		"CM_GATEWAY_EDGE_TLS_CERT=" + c("edge.pem"), "CM_GATEWAY_EDGE_TLS_KEY=" + c("edge-key.pem"),
		"CM_GATEWAY_TLS_CERT=" + c("gateway.pem"), "CM_GATEWAY_TLS_KEY=" + c("gateway-key.pem"), "CM_GATEWAY_TLS_CA=" + c("ca.pem"),
		"CM_GATEWAY_NATS_URL=" + natsURL, "CM_GATEWAY_NATS_USER=" + natsUsers.Gateway.Name,
		"CM_GATEWAY_NATS_PASSWORD_FILE=" + secret("nats-gateway", natsUsers.Gateway.Password),
	}, otel...), cfg.gatewayEnv...))
	m.httpc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: m.edgeTLS(t)}}
	waitFor(t, "gateway", 30*time.Second, func() bool {
		resp, err := m.httpc.Get(m.url("/healthz"))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return m
}

// startProviders starts the provider stand-ins and returns delivery's settings to send
// through them: the stand-ins' credentials, a tracking key, the gateway as the public URL, and
// the stand-ins' webhooks posted through the gateway (m.gateway must be chosen); and billing's
// settings to report to the Stripe stand-in and take its signed webhooks.
func (m *mesh) startProviders(t testing.TB, secret func(name, value string) string) (delivery, billing []string) {
	t.Helper()
	sgAddr, twAddr, stAddr := freePort(t), freePort(t), freePort(t)
	m.sendgrid, m.twilio, m.stripe = "http://"+sgAddr, "http://"+twAddr, "http://"+stAddr
	stKey, stSecret := secret("stripe-api-key", "sk_test_"+randomKEK()[:24]), secret("stripe-webhook-secret", "whsec_"+randomKEK()[:24])
	public := "https://localhost:" + strings.Split(m.gateway, ":")[1]
	sgKey, twToken := secret("sendgrid-api-key", "SG."+randomKEK()), secret("twilio-auth-token", randomKEK())
	pub := filepath.Join(m.dir, "sendgrid-webhook-public-key")
	const account, service = "AC00000000000000000000000000000000", "MG00000000000000000000000000000000"
	m.procs["standin"] = startProcessArgs(t, bin(t, "standin"), nil, "-sendgrid-addr", sgAddr, "-twilio-addr", twAddr, "-stripe-addr", stAddr,
		"-stripe-api-key-file", stKey, "-stripe-webhook-secret-file", stSecret, "-stripe-webhook-url", public+"/webhooks/stripe",
		"-sendgrid-api-key-file", sgKey, "-sendgrid-public-key-out", pub, "-sendgrid-webhook-url", public+"/webhooks/sendgrid",
		"-twilio-account-sid", account, "-twilio-auth-token-file", twToken, "-webhook-ca-file", filepath.Join(m.certs, "ca.pem"))
	waitFor(t, "standin", 30*time.Second, func() bool {
		return httpOK(m.sendgrid+"/outbox?limit=0") && httpOK(m.twilio+"/outbox?limit=0") && httpOK(m.stripe+"/outbox")
	})
	billing = []string{"CM_BILLING_STRIPE_URL=" + m.stripe, "CM_BILLING_STRIPE_API_KEY_FILE=" + stKey,
		"CM_BILLING_STRIPE_WEBHOOK_SECRET_FILE=" + stSecret, "CM_BILLING_REPORT_INTERVAL=1s"}
	return []string{
		"CM_DELIVERY_SENDGRID_URL=" + m.sendgrid, "CM_DELIVERY_SENDGRID_API_KEY_FILE=" + sgKey, "CM_DELIVERY_SENDGRID_WEBHOOK_PUBLIC_KEY_FILE=" + pub,
		"CM_DELIVERY_TWILIO_URL=" + m.twilio, "CM_DELIVERY_TWILIO_ACCOUNT_SID=" + account, "CM_DELIVERY_TWILIO_AUTH_TOKEN_FILE=" + twToken,
		"CM_DELIVERY_TWILIO_MESSAGING_SERVICE_SID=" + service,
		"CM_DELIVERY_TRACKING_KEY_FILE=" + secret("tracking-key", randomKEK()), "CM_DELIVERY_PUBLIC_URL=" + public,
		// A killed delivery's campaigns and in-flight rows are taken over in seconds, not minutes.
		"CM_DELIVERY_SEND_LEASE=15s", "CM_DELIVERY_SEND_SETTLE=20s", "CM_DELIVERY_DRIVE_LEASE=5s",
	}, billing
}

// edgeTLS trusts the dev CA, as curl --cacert does.
func (m *mesh) edgeTLS(t testing.TB) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(m.certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

func (m *mesh) url(path string) string {
	return "https://localhost:" + strings.Split(m.gateway, ":")[1] + path
}

// rest sends a JSON request and decodes the JSON answer.
func (m *mesh) rest(t testing.TB, method, path, token string, body any, hdr ...string) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, m.url(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := m.httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out, resp.Header
}

func (m *mesh) bootstrapFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(m.bootstrp, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (m *mesh) grpcConn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(m.gateway, grpc.WithTransportCredentials(credentials.NewTLS(m.edgeTLS(t))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestMeshEndToEnd(t *testing.T) {
	t.Parallel()
	m := startMesh(t)

	// REST login with the bootstrap credentials, then a protected call with the token.
	code, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	if code != 200 || token == "" {
		t.Fatalf("REST login: %d %v", code, login)
	}
	code, who, hdr := m.rest(t, "GET", "/v1/auth/whoami", token, nil)
	if code != 200 || who["role"] != "ROLE_ADMIN" || who["peerService"] != "gateway" || hdr.Get("X-Request-Id") == "" {
		t.Fatalf("REST whoami: %d %v", code, who)
	}
	if code, _, _ := m.rest(t, "GET", "/v1/auth/whoami", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("whoami without token: %d, want 401", code)
	}

	// The same over gRPC through the gateway (what grpcurl does).
	client := authv1.NewAuthServiceClient(m.grpcConn(t))
	var loginReq authv1.LoginRequest
	if err := json.Unmarshal(m.bootstrapFile(t, "admin.json"), &loginReq); err != nil {
		t.Fatal(err)
	}
	gl, err := client.Login(context.Background(), &loginReq)
	if err != nil {
		t.Fatalf("gRPC login through the gateway: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+gl.GetAccessToken())
	gw, err := client.WhoAmI(ctx, &authv1.WhoAmIRequest{})
	if err != nil || gw.GetSubject() != who["subject"] || gw.GetTenantId() != who["tenantId"] {
		t.Fatalf("gRPC whoami = %v, %v; REST said %v", gw, err, who)
	}

	// A viewer calling an admin RPC; a tenant admin reading a user outside the tenant.
	code, viewer, _ := m.rest(t, "POST", "/v1/users", token, map[string]any{
		"user": map[string]any{"email": "vera@acme.example", "role": "ROLE_VIEWER"}, "password": "vera's long password"})
	if code != 200 {
		t.Fatalf("create viewer: %d %v", code, viewer)
	}
	_, vlogin, _ := m.rest(t, "POST", "/v1/auth/login", "", map[string]any{"tenant": "acme", "email": "vera@acme.example", "password": "vera's long password"})
	vtoken, _ := vlogin["accessToken"].(string)
	if code, body, _ := m.rest(t, "POST", "/v1/users", vtoken, map[string]any{"user": map[string]any{"email": "x@acme.example", "role": "ROLE_ADMIN"}, "password": "another long password"}); code != http.StatusForbidden {
		t.Fatalf("viewer creating a user: %d %v, want 403", code, body)
	}
	_, oplogin, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "operator.json"))
	optoken, _ := oplogin["accessToken"].(string)
	_, opwho, _ := m.rest(t, "GET", "/v1/auth/whoami", optoken, nil)
	// Delivery behind the gateway: the admin keeps contacts; a viewer may not read them (personal data).
	code, contact, _ := m.rest(t, "POST", "/v1/contacts", token, map[string]any{"email": "Ada@Acme.example"})
	if code != 200 || contact["id"] == nil || contact["email"] != "ada@acme.example" {
		t.Fatalf("admin creates a contact: %d %v", code, contact)
	}
	if code, got, _ := m.rest(t, "GET", fmt.Sprintf("/v1/contacts/%s", contact["id"]), token, nil); code != 200 || got["email"] != "ada@acme.example" {
		t.Fatalf("admin reads the contact: %d %v", code, got)
	}
	if code, body, _ := m.rest(t, "GET", "/v1/contacts", vtoken, nil); code != http.StatusForbidden {
		t.Fatalf("viewer lists contacts: %d %v, want 403", code, body)
	}
	if code, _, _ := m.rest(t, "GET", fmt.Sprintf("/v1/users/%s", opwho["subject"]), token, nil); code != http.StatusNotFound {
		t.Fatalf("tenant admin reading a user outside the tenant: %d, want 404", code)
	}

	// An API key through the gateway: created by the admin, limited to its scopes.
	code, created, _ := m.rest(t, "POST", "/v1/apikeys", token, map[string]any{"name": "ingest", "scopes": []string{"users.read"}})
	secret, _ := created["secret"].(string)
	if code != 200 || !strings.HasPrefix(secret, "cmk_") {
		t.Fatalf("create API key: %d %v", code, created)
	}
	if code, _, _ := m.rest(t, "GET", "/v1/users", secret, nil); code != http.StatusOK {
		t.Fatalf("API key within its scopes: %d", code)
	}
	if code, _, _ := m.rest(t, "GET", "/v1/apikeys", secret, nil); code != http.StatusForbidden {
		t.Fatalf("API key beyond its scopes: %d, want 403", code)
	}
	// A refresh token rotates once; its replay is refused.
	refresh, _ := login["refreshToken"].(string)
	if code, _, _ := m.rest(t, "POST", "/v1/auth/refresh", "", map[string]any{"refreshToken": refresh}); code != http.StatusOK {
		t.Fatalf("refresh: %d", code)
	}
	if code, _, _ := m.rest(t, "POST", "/v1/auth/refresh", "", map[string]any{"refreshToken": refresh}); code != http.StatusUnauthorized {
		t.Fatalf("replayed refresh token: %d, want 401", code)
	}
	// The audit log of the tenant holds these calls and its chain verifies.
	code, chain, _ := m.rest(t, "POST", "/v1/audit:verify", token, map[string]any{})
	if code != 200 || chain["ok"] != true {
		t.Fatalf("audit chain: %d %v", code, chain)
	}

	// Limits: an oversized REST body and an oversized gRPC message.
	big := bytes.Repeat([]byte("x"), 2<<20)
	if code, _, _ := m.rest(t, "POST", "/v1/auth/login", "", big); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d, want 413", code)
	}
	_, err = client.Login(context.Background(), &authv1.LoginRequest{Email: string(big)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized gRPC message: %v, want ResourceExhausted", err)
	}
	// Reflection through the gateway lists the backends' services (what `grpcurl list` shows).
	stream, err := reflectionv1.NewServerReflectionClient(m.grpcConn(t)).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	refl, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, s := range refl.GetListServicesResponse().GetService() {
		listed = append(listed, s.GetName())
	}
	if !slices.Contains(listed, "campaignmesh.auth.v1.AuthService") {
		t.Fatalf("reflection lists %v; want campaignmesh.auth.v1.AuthService", listed)
	}

	// Prometheus metrics count the calls auth handled.
	mresp, err := http.Get("http://" + m.authAdmin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `grpc_server_handled_total{grpc_code="OK",grpc_method="Login"`) {
		t.Fatalf("auth /metrics has no Login counter:\n%.2000s", metrics)
	}

	// A throttled login answers 429 with Retry-After (the delay is not only in the body).
	var throttled http.Header
	for i := 0; i < 8 && throttled == nil; i++ {
		code, _, hdr := m.rest(t, "POST", "/v1/auth/login", "", map[string]any{"tenant": "acme", "email": "guess@acme.example", "password": "wrong password"})
		if code == http.StatusTooManyRequests {
			throttled = hdr
		}
	}
	if throttled == nil || throttled.Get("Retry-After") == "" {
		t.Fatalf("repeated failed logins: no 429 with Retry-After (%v)", throttled)
	}

	// OpenAPI is served.
	resp, err := m.httpc.Get(m.url("/openapi.json"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("openapi: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestRESTCallIsOneTraceAcrossGatewayAndAuth(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	code, _, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"),
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if code != 200 {
		t.Fatalf("login: %d", code)
	}
	waitFor(t, "spans of both services", 15*time.Second, func() bool {
		services := m.otlp.servicesInTrace(traceID)
		return services["gateway"] > 0 && services["auth"] > 0
	})

	// Events: the trace goes on from the gateway through ingest, across JetStream (headers), to
	// the writer's insert into ClickHouse.
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	const eventsTrace = "0af7651916cd43dd8448eb211c80319c"
	code, _, _ = m.rest(t, "POST", "/v1/events:batch", token, map[string]any{"events": []map[string]any{
		{"eventId": "traced-1", "type": "EVENT_TYPE_CLICK", "userId": "u1"}}},
		"traceparent", "00-"+eventsTrace+"-b7ad6b7169203331-01")
	if code != 200 {
		t.Fatalf("events: %d", code)
	}
	waitFor(t, "spans of gateway, ingest and the writer in one trace", 20*time.Second, func() bool {
		services := m.otlp.servicesInTrace(eventsTrace)
		return services["gateway"] > 0 && services["ingest"] > 0 && services["analytics"] > 0
	})
}

func TestGatewayRateLimitsPerClientIP(t *testing.T) {
	t.Parallel()
	m := startMesh(t, "CM_GATEWAY_RATE_LIMIT=20", "CM_GATEWAY_RATE_WINDOW=10s")
	_, oplogin, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "operator.json"))
	optoken, _ := oplogin["accessToken"].(string)
	var last int
	var retry string
	for i := 0; i < 40 && last != http.StatusTooManyRequests; i++ {
		resp, err := m.httpc.Get(m.url("/v1/auth/keys"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last, retry = resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if last != http.StatusTooManyRequests || retry == "" {
		t.Fatalf("after 40 requests: status %d, Retry-After %q; want 429 with Retry-After", last, retry)
	}
	// gRPC callers from the same address are limited too, with RESOURCE_EXHAUSTED.
	_, err := authv1.NewAuthServiceClient(m.grpcConn(t)).ListSigningKeys(context.Background(), &authv1.ListSigningKeysRequest{})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gRPC over the limit: %v, want ResourceExhausted", err)
	}
	// The refusals are audited in the platform's chain: one record per address and window that
	// counts them (gateway/refusals.go), delivered through the gateway's audit stream to auth.
	waitFor(t, "the gateway's record of the refusals", 60*time.Second, func() bool {
		code, page, _ := m.rest(t, "GET", "/v1/audit/records?method=gateway.RateLimited", optoken, nil)
		recs, _ := page["records"].([]any)
		for _, r := range recs {
			rec, _ := r.(map[string]any)
			if code == http.StatusOK && rec["service"] == "gateway" && rec["clientAddress"] == "127.0.0.1" &&
				rec["outcome"] == "RESOURCE_EXHAUSTED" && strings.HasSuffix(fmt.Sprint(rec["resource"]), " refused") {
				return true
			}
		}
		return false // 429 too, while the address is still over its limit
	})
	var chain map[string]any
	waitFor(t, "the platform chain's verification past the rate limit", 30*time.Second, func() bool {
		var code int
		code, chain, _ = m.rest(t, "POST", "/v1/audit:verify", optoken, map[string]any{})
		return code != http.StatusTooManyRequests
	})
	if chain["ok"] != true {
		t.Fatalf("platform audit chain: %v", chain)
	}
}

// Events sent with an API key through the gateway, over REST and gRPC, land in ClickHouse
// exactly once, even when a batch is sent twice.
func TestEventsLandInClickHouse(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	code, created, _ := m.rest(t, "POST", "/v1/apikeys", token, map[string]any{"name": "ingest", "scopes": []string{"events.write"}})
	key, _ := created["secret"].(string)
	if code != 200 || key == "" {
		t.Fatalf("create key: %d %v", code, created)
	}
	batch := map[string]any{"events": []map[string]any{
		{"eventId": "r1", "type": "EVENT_TYPE_IMPRESSION", "userId": "u1", "campaignId": "c1"},
		{"eventId": "r2", "type": "EVENT_TYPE_CLICK", "userId": "u1", "campaignId": "c1"},
		{"eventId": "r3", "type": "EVENT_TYPE_CONVERSION", "name": "purchase", "userId": "u1", "campaignId": "c1",
			"value": map[string]any{"amountMicros": "12500000", "currency": "EUR"}, "properties": map[string]any{"plan": "pro"}},
		{"eventId": "bad", "type": "EVENT_TYPE_CLICK"},
	}}
	code, resp, _ := m.rest(t, "POST", "/v1/events:batch", key, batch)
	if code != 200 || resp["accepted"] != float64(3) {
		t.Fatalf("REST batch: %d %v", code, resp)
	}
	rejected, _ := resp["rejected"].([]any)
	if len(rejected) != 1 || rejected[0].(map[string]any)["index"] != float64(3) {
		t.Fatalf("rejections: %v", resp["rejected"])
	}
	if code, _, _ := m.rest(t, "POST", "/v1/events:batch", key, batch); code != 200 { // a retry
		t.Fatalf("retried batch: %d", code)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
	g, err := ingestv1.NewIngestServiceClient(m.grpcConn(t)).IngestEvents(ctx, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{
		{EventId: "g1", Type: ingestv1.EventType_EVENT_TYPE_PAGE, AnonymousId: "a1"},
		{EventId: "g2", Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "signup", UserId: "u2"},
	}})
	if err != nil || g.GetAccepted() != 2 {
		t.Fatalf("gRPC batch: %v %v", g, err)
	}
	// A token without events.write (a viewer's role) cannot send.
	if code, _, _ := m.rest(t, "POST", "/v1/events:batch", token+"x", batch); code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", code)
	}

	admin := chtest.Admin(t)
	conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: m.clickhouseDB, Username: admin.Name, Password: admin.Password}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	count := func(q string) uint64 {
		var n uint64
		if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			return 0 // the writer may not have created the table yet
		}
		return n
	}
	waitFor(t, "5 events in ClickHouse", 20*time.Second, func() bool {
		return count(`SELECT uniqExact(tenant_id, event_id) FROM events WHERE tenant_id != ''`) == 5
	})
	if n := count(`SELECT count() FROM events WHERE tenant_id != ''`); n != 5 {
		t.Fatalf("raw rows = %d, want 5 (the retried batch must be dropped by the stream)", n)
	}
	if n := count(`SELECT toUInt64(sum(value_micros)) FROM events WHERE event_id = 'r3' AND currency = 'EUR'`); n != 12500000 {
		t.Fatalf("conversion value = %d", n)
	}
}

// randomKEK is fresh key material for auth's -key-encryption-keys (32 random bytes, base64).
func randomKEK() string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	return base64.StdEncoding.EncodeToString(raw)
}
