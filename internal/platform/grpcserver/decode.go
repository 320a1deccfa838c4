package grpcserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// maxDecodeDepth bounds how deeply messages may nest in a request: protobuf's own default.
const maxDecodeDepth = 10000

// decodeCodec is the server's "proto" codec. grpc-go answers a request that does not decode
// (invalid UTF-8 in a string, nesting past the recursion limit, a truncated field) with
// INTERNAL and its own "grpc: error unmarshalling request" text before any interceptor runs.
// This codec instead keeps the decode error aside, keyed by the message, and hands an empty
// message on; the decode stage of the chain (always reached, because nothing before it
// refuses a call) then answers INVALID_ARGUMENT naming the field.
type decodeCodec struct {
	proto   encoding.CodecV2
	failed  sync.Map // proto.Message → error
	pending atomic.Int64
}

func newDecodeCodec() *decodeCodec {
	return &decodeCodec{proto: encoding.GetCodecV2("proto")}
}

func (c *decodeCodec) Name() string { return "proto" }

func (c *decodeCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c *decodeCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if err := proto.Unmarshal(b, m); err != nil {
		proto.Reset(m)
		c.failed.Store(m, decodeError(m.ProtoReflect().Descriptor(), b))
		c.pending.Add(1)
	}
	return nil
}

// take returns (and forgets) the decode error of m, if its decoding failed.
func (c *decodeCodec) take(m any) error {
	if c.pending.Load() == 0 {
		return nil
	}
	err, ok := c.failed.LoadAndDelete(m)
	if !ok {
		return nil
	}
	c.pending.Add(-1)
	return err.(error)
}

func (c *decodeCodec) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.take(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (c *decodeCodec) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &decodeCheckedStream{ServerStream: ss, codec: c})
}

type decodeCheckedStream struct {
	grpc.ServerStream
	codec *decodeCodec
}

func (s *decodeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.codec.take(m)
}

// decodeError names the field that made b undecodable as a message of md. It walks the wire
// format with the descriptor only after proto.Unmarshal has failed, so well-formed requests
// never pay for it.
func decodeError(md protoreflect.MessageDescriptor, b []byte) error {
	field, reason := locateDecodeError(md, b, "", 1)
	if field == "" {
		field, reason = "request", "is not a well-formed protobuf message"
	}
	var v apperr.Violations
	v.Add(field, "%s", reason)
	return v.Err()
}

func locateDecodeError(md protoreflect.MessageDescriptor, b []byte, prefix string, depth int) (field, reason string) {
	if depth > maxDecodeDepth {
		return orRequest(prefix), fmt.Sprintf("nests deeper than %d messages", maxDecodeDepth)
	}
	counts := map[protoreflect.FieldNumber]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return orRequest(prefix), "is not a well-formed protobuf message"
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return orRequest(prefix), "is not a well-formed protobuf message"
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return join(prefix, string(fd.Name())), "is truncated"
		}
		b = b[n:]
		path := join(prefix, string(fd.Name()))
		if fd.IsList() {
			path = index(path, strconv.Itoa(counts[num]))
			counts[num]++
		}
		switch {
		case fd.IsMap():
			if f, r := locateDecodeError(fd.Message(), v, path, depth+1); f != "" {
				return f, r
			}
		case fd.Kind() == protoreflect.StringKind:
			if !utf8.Valid(v) {
				return path, "is not valid UTF-8"
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if f, r := locateDecodeError(fd.Message(), v, path, depth+1); f != "" {
				return f, r
			}
		}
	}
	return "", ""
}

// join extends a field path; paths stop growing at a few hundred bytes so that a deeply nested
// request does not get an answer the size of its nesting.
func join(prefix, name string) string {
	switch {
	case prefix == "":
		return name
	case strings.HasSuffix(prefix, "..."):
		return prefix
	case len(prefix) > 200:
		return prefix + "..."
	}
	return prefix + "." + name
}

// index adds a list index or map key to a field path.
func index(path, key string) string {
	if strings.HasSuffix(path, "...") {
		return path
	}
	return path + "[" + key + "]"
}

func orRequest(path string) string {
	if path == "" {
		return "request"
	}
	return path
}
