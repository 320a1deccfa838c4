package chtest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a loopback TCP proxy in front of the test ClickHouse server, for tests of what a
// client sees when the server goes away: connect through Addr, then break the path with Cut,
// Hang or Close.
type Proxy struct {
	lis    net.Listener
	target string
	mode   atomic.Int32

	mu    sync.Mutex
	conns []net.Conn
}

const (
	forwarding int32 = iota
	cutting          // a connection is closed when its client sends anything
	hanging          // connections are accepted and never answered
)

// NewProxy starts a proxy to Addr(); it stops when the test ends.
func NewProxy(tb testing.TB) *Proxy {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{lis: lis, target: Addr()}
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Cut makes the server go away in the middle of a conversation: the open connections stay up
// (a pool finds them alive) and each is closed as soon as its client sends a request, so the
// client reads EOF or a reset; new connections fare the same.
func (p *Proxy) Cut() { p.mode.Store(cutting) }

// Restore makes the server come back: new requests and connections are forwarded again
// (connections Cut or Hang closed stay closed; clients dial again).
func (p *Proxy) Restore() { p.mode.Store(forwarding) }

// Hang makes the server stop answering: open connections are closed and new ones are accepted
// but never answered, so clients time out.
func (p *Proxy) Hang() {
	p.mode.Store(hanging)
	p.closeConns()
}

// Close makes the server gone: connections are refused and open ones closed.
func (p *Proxy) Close() {
	_ = p.lis.Close()
	p.closeConns()
}

func (p *Proxy) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *Proxy) accept() {
	for {
		client, err := p.lis.Accept()
		if err != nil {
			return // closed
		}
		p.track(client)
		if p.mode.Load() == hanging {
			continue // held open, never answered, until Close
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.track(server)
		go func() {
			defer client.Close()
			defer server.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				if err != nil || p.mode.Load() != forwarding {
					return
				}
				if _, err := server.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
		go func() {
			defer client.Close()
			_, _ = io.Copy(client, server)
		}()
	}
}
