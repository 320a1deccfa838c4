package grpcapi

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// MaxImportChunk is the most bytes of one ImportContacts chunk: with the message's framing it
// stays under the server's default 1 MiB message limit.
const MaxImportChunk = 1_048_000

// ImportContacts implements deliveryv1.DeliveryServiceServer: the chunks are read as one file,
// as the domain's importer asks for bytes, so the file is never held whole.
func (s *Server) ImportContacts(stream grpc.ClientStreamingServer[deliveryv1.ImportContactsRequest, deliveryv1.ImportContactsResponse]) error {
	ctx := stream.Context()
	res, err := s.aud.ImportCSV(ctx, tenant(ctx), &chunkReader{recv: stream.Recv})
	var de *apperr.Error
	if errors.As(err, &de) && de.Code == apperr.ResourceExhausted {
		// Past a limit the rows before it are stored: say so, never answer as if nothing (or
		// everything) was imported.
		return apperr.New(de.Code, de.Reason, "%s; the rows before it were imported (%d created, %d updated, %d unchanged, %d failed): split the file and import the rest (the import is an upsert)",
			de.Message, res.Created, res.Updated, res.Unchanged, res.Failed)
	}
	if err != nil {
		return err
	}
	return stream.SendAndClose(importToProto(res))
}

// chunkReader reads the chunks of an ImportContacts stream as one byte stream.
type chunkReader struct {
	recv func() (*deliveryv1.ImportContactsRequest, error)
	buf  []byte
	err  error
}

var errChunkTooLarge = apperr.New(apperr.Invalid, "IMPORT_CHUNK_TOO_LARGE", "a chunk is larger than %d bytes; send the file in smaller chunks", MaxImportChunk)

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		req, err := r.recv()
		switch {
		case errors.Is(err, io.EOF):
			r.err = io.EOF
		case err != nil:
			// The caller went away or the stream broke: the importer stops with this error.
			r.err = err
		case len(req.GetChunk()) > MaxImportChunk:
			r.err = errChunkTooLarge
		default:
			r.buf = req.GetChunk()
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func importToProto(res delivery.ImportResult) *deliveryv1.ImportContactsResponse {
	p := &deliveryv1.ImportContactsResponse{Created: int64(res.Created), Updated: int64(res.Updated),
		Unchanged: int64(res.Unchanged), Failed: int64(res.Failed)}
	for _, e := range res.Errors {
		p.Errors = append(p.Errors, &deliveryv1.ImportRowError{Line: int32(e.Line), Column: e.Column, Reason: e.Reason})
	}
	return p
}

// CountSegment implements deliveryv1.DeliveryServiceServer.
func (s *Server) CountSegment(ctx context.Context, req *deliveryv1.CountSegmentRequest) (*deliveryv1.CountSegmentResponse, error) {
	var f *delivery.Filter
	if pf := req.GetFilter(); pf != nil {
		sg := segmentFromProto(&deliveryv1.Segment{Filter: pf})
		f = &sg.Filter
	}
	n, err := s.aud.CountSegment(ctx, tenant(ctx), req.GetSegmentId(), f)
	if err != nil {
		return nil, err
	}
	resp := &deliveryv1.CountSegmentResponse{Contacts: int64(n.Contacts)}
	for _, ch := range delivery.Channels {
		resp.Channels = append(resp.Channels, &deliveryv1.ChannelCount{Channel: channelToProto(ch), Eligible: int64(n.Eligible[ch])})
	}
	return resp, nil
}
