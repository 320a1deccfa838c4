package gateway

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gRPC messages over MaxBodyBytes. grpc-go refuses a message over its own limit by writing
// RESOURCE_EXHAUSTED "grpc: received message larger than max (…)" itself, before the proxy
// sees it. Instead the gateway reads gRPC bodies through limitFrames, which lets no
// oversized message reach grpc-go: it discards the message's bytes as they arrive, hands
// grpc-go an empty message in its place and marks the request, and the gateway's
// interceptors answer the mark with a plain RESOURCE_EXHAUSTED. grpc-go's own limit stays as
// a backstop for compressed messages that grow past it.

type oversizeKey struct{}

// oversize marks a gRPC request that sent a message over the limit.
type oversize struct{ seen atomic.Bool }

// limitFrames wraps a gRPC request's body (see above).
func limitFrames(r *http.Request, limit int) *http.Request {
	o := &oversize{}
	r = r.WithContext(context.WithValue(r.Context(), oversizeKey{}, o))
	r.Body = &frameLimiter{body: r.Body, limit: uint32(limit), mark: o}
	return r
}

// frameLimiter passes gRPC length-prefixed frames (1 flag byte, 4 length bytes, payload)
// through, replacing each frame over limit by an empty one.
type frameLimiter struct {
	body      io.ReadCloser
	limit     uint32
	mark      *oversize
	hdr       [5]byte
	hdrN      int
	pending   []byte // header bytes still to hand out
	remaining uint32 // payload bytes of the current frame still to pass
	skip      uint32 // payload bytes of an oversized frame still to discard
}

func (f *frameLimiter) Read(p []byte) (int, error) {
	for {
		switch {
		case len(f.pending) > 0:
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			return n, nil
		case f.skip > 0:
			var scratch [32 << 10]byte
			n, err := f.body.Read(scratch[:min(int(f.skip), len(scratch))])
			f.skip -= uint32(n)
			if err != nil {
				return 0, err
			}
		case f.remaining > 0:
			n, err := f.body.Read(p[:min(len(p), int(f.remaining))])
			f.remaining -= uint32(n)
			return n, err
		default:
			n, err := f.body.Read(f.hdr[f.hdrN:])
			f.hdrN += n
			if f.hdrN == len(f.hdr) {
				f.hdrN = 0
				length := binary.BigEndian.Uint32(f.hdr[1:])
				if length > f.limit {
					f.mark.seen.Store(true)
					f.skip, f.pending = length, make([]byte, 5)
				} else {
					f.remaining, f.pending = length, append([]byte(nil), f.hdr[:]...)
				}
				continue
			}
			if err != nil {
				return 0, err
			}
		}
	}
}

func (f *frameLimiter) Close() error { return f.body.Close() }

func (g *Gateway) tooLarge(ctx context.Context) error {
	if o, ok := ctx.Value(oversizeKey{}).(*oversize); ok && o.seen.Load() {
		g.refusals.note(ctx, MethodRequestTooLarge, grpcClientIP(ctx))
		return status.Error(codes.ResourceExhausted, fmt.Sprintf("message larger than %d bytes", g.cfg.MaxBodyBytes))
	}
	return nil
}

func (g *Gateway) unarySizeCheck(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := g.tooLarge(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (g *Gateway) streamSizeCheck(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &sizeCheckedStream{ServerStream: ss, g: g})
}

type sizeCheckedStream struct {
	grpc.ServerStream
	g *Gateway
}

func (s *sizeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.g.tooLarge(s.Context())
}
