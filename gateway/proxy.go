package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// frame is one gRPC message passed through unparsed.
type frame struct{ data []byte }

// passthroughCodec hands frames through as bytes and encodes everything else (the gateway's own
// health and reflection services) as protobuf. It keeps the name "proto" so clients see nothing
// unusual.
type passthroughCodec struct{ proto encoding.CodecV2 }

func newPassthroughCodec() passthroughCodec {
	return passthroughCodec{proto: encoding.GetCodecV2("proto")}
}

func (c passthroughCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.data)}, nil
	}
	return c.proto.Marshal(v)
}

func (c passthroughCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.data = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (passthroughCodec) Name() string { return "proto" }

// droppedMetadata is not forwarded to backends: transport headers, and what the gateway itself
// sets (request id, client address, trace context — the tracing client handler injects a new one).
var droppedMetadata = map[string]bool{
	"content-type": true, "user-agent": true, "te": true, "connection": true,
	"x-forwarded-for": true, "x-request-id": true, "traceparent": true, "tracestate": true,
}

// proxy forwards any gRPC call to the backend that owns its service, unparsed: the backend
// authenticates and authorizes it (the caller's `authorization` metadata goes along).
type proxy struct {
	backends []Backend
	codec    passthroughCodec
	logger   *slog.Logger
}

func (p *proxy) route(method string) *grpc.ClientConn {
	svc := strings.TrimPrefix(method, "/")
	for _, b := range p.backends {
		if strings.HasPrefix(svc, b.Package+".") {
			return b.Conn
		}
	}
	return nil
}

func outgoingMetadata(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if !droppedMetadata[k] && !strings.HasPrefix(k, ":") && !strings.HasPrefix(k, "grpc-") {
			out[k] = v
		}
	}
	out.Set("x-request-id", telemetry.RequestID(ctx))
	if ip := clientIPFromContext(ctx); ip != "" {
		out.Set("x-forwarded-for", ip)
	}
	return out
}

func (p *proxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "no method")
	}
	conn := p.route(method)
	if conn == nil || !publicMethod(method) {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, outgoingMetadata(ss.Context()))
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodecV2(p.codec))
	if err != nil {
		return p.clean(ctx, method, err)
	}

	toBackend := make(chan error, 1)
	go func() {
		for {
			f := &frame{}
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					toBackend <- cs.CloseSend()
				} else {
					toBackend <- err
				}
				return
			}
			if err := cs.SendMsg(f); err != nil {
				toBackend <- nil // the backend ended the call; its status comes from RecvMsg
				return
			}
		}
	}()
	toClient := make(chan error, 1)
	go func() {
		for first := true; ; first = false {
			f := &frame{}
			if err := cs.RecvMsg(f); err != nil {
				toClient <- err
				return
			}
			if first {
				if hdr, err := cs.Header(); err == nil {
					if err := ss.SendHeader(hdr); err != nil {
						toClient <- err
						return
					}
				}
			}
			if err := ss.SendMsg(f); err != nil {
				toClient <- err
				return
			}
		}
	}()

	for {
		select {
		case err := <-toBackend:
			if err != nil {
				return p.clean(ctx, method, err) // the client went away or sent too much: cancel the backend call
			}
			toBackend = nil // client finished sending; wait for the backend
		case err := <-toClient:
			if hdr, herr := cs.Header(); herr == nil {
				_ = ss.SetHeader(hdr) // for calls that end without a message
			}
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return p.clean(ctx, method, err)
		}
	}
}

// clean passes the backends' own statuses through and replaces the text of any status that
// grpc-go made on either side of the gateway (see cleanStatus).
func (p *proxy) clean(ctx context.Context, method string, err error) error {
	return cleanLogged(ctx, p.logger, method, err).Err()
}
