package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

// startAuditSink gives a server of the bench the durable audit sink every server needs: an
// embedded JetStream under dir stores the records (a bench has no auth to deliver them to).
// stop releases it.
func startAuditSink(ctx context.Context, dir, service string) (sink *auditnats.Sink, stop func(), err error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "audit-nats"), NoLog: true, NoSigs: true})
	if err != nil {
		return nil, nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, nil, fmt.Errorf("audit nats not ready")
	}
	nc, js, err := natsjs.Connect(ns.ClientURL(), "bench-audit")
	if err != nil {
		ns.Shutdown()
		return nil, nil, err
	}
	stop = func() { nc.Close(); ns.Shutdown() }
	if sink, err = auditnats.New(ctx, js, service, nil, slog.New(slog.DiscardHandler), auditnats.DefaultConfig); err != nil {
		stop()
		return nil, nil, err
	}
	return sink, stop, nil
}
