package chtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ServerBinary is the ClickHouse server that StartCluster runs (Debian's clickhouse-server
// 18.16, which scripts/devenv.sh installs).
const ServerBinary = "/usr/sbin/clickhouse-server"

// Cluster is a set of throw-away ClickHouse servers, each one shard of a cluster that every
// server's configuration names. The servers know the users of scripts/devenv.sh: Admin
// (default), Writer (analytics_writer) and Reader (analytics_reader, readonly=2), each with a
// generated password; remote shards are read as Reader, as on the dev servers.
type Cluster struct {
	// Name is the cluster's name in remote_servers (Distributed(Name, …)).
	Name string
	// Addrs are the servers' native protocol addresses, in shard order.
	Addrs []string
	// Admin, Writer and Reader are the same users on every server.
	Admin, Writer, Reader User
}

// StartCluster starts shards clickhouse-server processes, each shard of cluster name, on free
// loopback ports with their data in a temporary directory; it returns when every one answers.
// When the test ends the servers are killed and their data removed. Run as root, the servers
// run as the clickhouse user (as scripts/devenv.sh runs them). A server takes about a quarter
// of a second to start and 75 MB of memory.
func StartCluster(tb testing.TB, name string, shards int) *Cluster {
	tb.Helper()
	if shards < 1 {
		tb.Fatalf("chtest.StartCluster: %d shards", shards)
	}
	if _, err := os.Stat(ServerBinary); err != nil {
		tb.Fatalf("chtest.StartCluster needs %s (scripts/devenv.sh up installs it): %v", ServerBinary, err)
	}
	c := &Cluster{Name: name, Admin: User{Name: "default", Password: password(tb)},
		Writer: User{Name: "analytics_writer", Password: password(tb)}, Reader: User{Name: "analytics_reader", Password: password(tb)}}
	for len(c.Addrs) < shards {
		if a := freeAddr(tb); !slices.Contains(c.Addrs, a) {
			c.Addrs = append(c.Addrs, a)
		}
	}
	// Not t.TempDir: its parent is private to the test's user, and the servers may run as
	// another one.
	root, err := os.MkdirTemp("", "chtest-cluster-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil { // MkdirTemp's 0700 keeps the clickhouse user out
		tb.Fatal(err)
	}
	servers := make([]*server, shards)
	for i := range servers {
		servers[i] = c.start(tb, filepath.Join(root, "shard"+strconv.Itoa(i+1)), i)
	}
	for i, s := range servers {
		c.await(tb, i, s)
	}
	return c
}

// server is one started clickhouse-server process.
type server struct {
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has ended
	stderr bytes.Buffer
}

// start writes shard i's configuration into dir and starts its server, killed when the test ends.
func (c *Cluster) start(tb testing.TB, dir string, i int) *server {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.xml")
	if err := os.WriteFile(cfg, []byte(c.config(dir, i)), 0o600); err != nil {
		tb.Fatal(err)
	}
	s := &server{dir: dir, exited: make(chan struct{})}
	args := []string{"--config-file=" + cfg}
	s.cmd = exec.Command(ServerBinary, args...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no server outlives a killed test binary
	if os.Geteuid() == 0 {
		// The server refuses no root, but its files should not be root's; setpriv execs in
		// place (the pid stays the server's) and sets the parent-death signal again, since
		// a change of user clears it.
		uid, gid := serviceAccount(tb, "clickhouse")
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chown(cfg, uid, gid); err != nil {
			tb.Fatal(err)
		}
		s.cmd = exec.Command("setpriv", append([]string{"--reuid=clickhouse", "--regid=clickhouse", "--init-groups", "--pdeathsig=SIGKILL", ServerBinary}, args...)...)
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = &s.stderr, &s.stderr
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start clickhouse-server for shard %d: %v", i+1, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	tb.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
	return s
}

// await returns when shard i's server answers a query; the test fails when it exits first or
// does not answer within a minute.
func (c *Cluster) await(tb testing.TB, i int, s *server) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.ping(i)
		if err == nil {
			return
		}
		select {
		case <-s.exited:
			tb.Fatalf("clickhouse-server of shard %d exited: %s\n%s", i+1, s.stderr.String(), tail(filepath.Join(s.dir, "server.err.log")))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("clickhouse-server of shard %d (%s) does not answer: %v\n%s", i+1, c.Addrs[i], err, tail(filepath.Join(s.dir, "server.err.log")))
		}
	}
}

func (c *Cluster) ping(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := c.open(i, "", c.Admin)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Ping(ctx)
}

func (c *Cluster) open(i int, database string, u User) (driver.Conn, error) {
	return ch.Open(&ch.Options{Addr: []string{c.Addrs[i]}, Auth: ch.Auth{Database: database, Username: u.Name, Password: u.Password},
		DialTimeout: 2 * time.Second, ReadTimeout: time.Minute})
}

// Conn is a connection to shard i's server as u, in database (empty: default); it is closed
// when the test ends.
func (c *Cluster) Conn(tb testing.TB, i int, database string, u User) driver.Conn {
	tb.Helper()
	conn, err := c.open(i, database, u)
	if err == nil {
		err = conn.Ping(context.Background())
	}
	if err != nil {
		tb.Fatalf("connect to shard %d (%s): %v", i+1, c.Addrs[i], err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Exec runs sql as Admin on every server, in shard order.
func (c *Cluster) Exec(tb testing.TB, sql string) {
	tb.Helper()
	for i := range c.Addrs {
		if err := c.Conn(tb, i, "", c.Admin).Exec(context.Background(), sql); err != nil {
			tb.Fatalf("shard %d: %s: %v", i+1, sql, err)
		}
	}
}

// NewDatabase creates a database of the same fresh name on every server and returns the name
// (Distributed tables read the same database on each shard).
func (c *Cluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	c.Exec(tb, "CREATE DATABASE "+name)
	return name
}

// config is shard i's server configuration: the shape of scripts/devenv.sh's (users, the
// reader's profile, the cluster) with smaller caches and no HTTP port.
func (c *Cluster) config(dir string, i int) string {
	_, port, _ := net.SplitHostPort(c.Addrs[i])
	var remote strings.Builder
	for _, a := range c.Addrs {
		host, p, _ := net.SplitHostPort(a)
		fmt.Fprintf(&remote, "      <shard><replica><host>%s</host><port>%s</port><user>%s</user><password>%s</password></replica></shard>\n",
			host, p, c.Reader.Name, c.Reader.Password)
	}
	user := func(u User, profile string) string {
		sum := sha256.Sum256([]byte(u.Password))
		return fmt.Sprintf("    <%[1]s><password_sha256_hex>%[2]x</password_sha256_hex><profile>%[3]s</profile><quota>default</quota>"+
			"<networks><ip>127.0.0.1</ip><ip>::1</ip></networks></%[1]s>\n", u.Name, sum, profile)
	}
	return fmt.Sprintf(`<?xml version="1.0"?>
<!-- chtest.StartCluster: shard %[1]d of cluster %[2]s. -->
<yandex>
  <logger><level>warning</level><log>%[3]s/server.log</log><errorlog>%[3]s/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[4]s</tcp_port>
  <path>%[3]s/data/</path>
  <tmp_path>%[3]s/tmp/</tmp_path>
  <user_files_path>%[3]s/user_files/</user_files_path>
  <format_schema_path>%[3]s/format_schemas/</format_schema_path>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <default_profile>default</default_profile>
  <profiles>
    <default/>
    <reader><readonly>2</readonly></reader>
  </profiles>
  <quotas><default/></quotas>
  <users>
%[5]s  </users>
  <remote_servers>
    <%[2]s>
%[6]s    </%[2]s>
  </remote_servers>
</yandex>
`, i+1, c.Name, dir, port, user(c.Admin, "default")+user(c.Writer, "default")+user(c.Reader, "reader"), remote.String())
}

// serviceAccount is the uid and gid of the system user name.
func serviceAccount(tb testing.TB, name string) (int, int) {
	tb.Helper()
	u, err := osuser.Lookup(name)
	if err != nil {
		tb.Fatalf("system user %s (clickhouse-server's package makes it): %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func password(tb testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// tail is the end of a log file, for a failure message.
func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
