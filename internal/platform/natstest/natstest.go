// Package natstest runs a real, embedded NATS server with JetStream (file storage, fsync on
// every write) for tests.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Start runs a JetStream server on a random loopback port, storing under a temp dir, and
// returns its URL. It stops when the test ends.
func Start(tb testing.TB) string {
	tb.Helper()
	return StartServer(tb).ClientURL()
}

// StartServer is Start returning the server, for tests that stop it.
func StartServer(tb testing.TB) *server.Server {
	tb.Helper()
	return StartServerWith(tb, nil)
}

// StartServerWith is StartServer with the options changed by configure (nil: none) first.
func StartServerWith(tb testing.TB, configure func(*server.Options)) *server.Server {
	tb.Helper()
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: tb.TempDir(), SyncAlways: true, NoLog: true, NoSigs: true,
	}
	if configure != nil {
		configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server not ready")
	}
	tb.Cleanup(s.Shutdown)
	return s
}
