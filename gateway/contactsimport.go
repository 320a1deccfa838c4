package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// The contacts import at the edge: POST /v1/contacts:import with a CSV file as the body
// (Content-Type text/csv). A plain handler, not a grpc-gateway route, because the RPC is a client
// stream and the file is far larger than a REST body may be: the body is read in chunks and
// each chunk is sent on the ImportContacts stream as it arrives, so the gateway never holds the
// file. The caller's Authorization header goes to delivery as is (a bearer access token or API
// key, as grpc-gateway forwards it), and delivery checks it and contacts.write.
//
// Answers: 200 with the ImportContactsResponse as JSON once delivery answered; a body declared
// (Content-Length) larger than ContactsImportMaxBytes 413 before anything is sent; a file over
// delivery's limits while streamed 413 (the rows before the limit are stored, and the answer
// says so); 415 without text/csv; 401 without a credential; other errors as the REST routes
// answer them.

// contactsImportPath is the route; deliveryPackage the backend that serves it.
const (
	contactsImportPath = "/v1/contacts:import"
	deliveryPackage    = "campaignmesh.delivery.v1"
)

// ContactsImportMaxBytes is the largest file the edge forwards (delivery's default import
// limit, 256 MiB); ContactsImportChunk the bytes sent per stream message.
const (
	ContactsImportMaxBytes = 256 << 20
	ContactsImportChunk    = 256 << 10
)

// contactsImport serves the import route.
type contactsImport struct {
	client deliveryv1.DeliveryServiceClient
	mux    *runtime.ServeMux
	logger *slog.Logger
	// refusals records bodies refused as too large, as the REST routes' limit does.
	refusals *refusals
}

func newContactsImport(backends []Backend, mux *runtime.ServeMux, logger *slog.Logger, refused *refusals) *contactsImport {
	for _, b := range backends {
		if b.Package == deliveryPackage {
			return &contactsImport{client: deliveryv1.NewDeliveryServiceClient(b.Conn), mux: mux, logger: logger, refusals: refused}
		}
	}
	return nil // no delivery behind this gateway: the route is not served
}

func (c *contactsImport) serve(w http.ResponseWriter, r *http.Request) {
	if slot, ok := r.Context().Value(routeKey{}).(*routeSlot); ok {
		slot.route = "POST " + contactsImportPath
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "text/csv" {
		writeJSONError(w, http.StatusUnsupportedMediaType, codes.InvalidArgument, "the body must be a CSV file sent as Content-Type: text/csv")
		return
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		writeJSONError(w, http.StatusUnauthorized, codes.Unauthenticated, "credential required: send a bearer access token or API key")
		return
	}
	if r.ContentLength > ContactsImportMaxBytes {
		c.refusals.note(r.Context(), MethodRequestTooLarge, clientIPFromContext(r.Context()))
		writeJSONError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
			fmt.Sprintf("the file is larger than %d bytes; nothing was imported: split it", ContactsImportMaxBytes))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", auth, "x-request-id", telemetry.RequestID(r.Context())))
	if ip := clientIPFromContext(r.Context()); ip != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", ip)
	}
	stream, err := c.client.ImportContacts(ctx)
	if err != nil {
		c.answerError(w, r, err)
		return
	}
	body := io.LimitReader(r.Body, ContactsImportMaxBytes+1)
	buf := make([]byte, ContactsImportChunk)
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			// A send error means the stream ended (delivery answered, e.g. a bad header or a
			// refused credential): CloseAndRecv below returns its status.
			if err := stream.Send(&deliveryv1.ImportContactsRequest{Chunk: buf[:n]}); err != nil {
				break
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			// The client's body broke off: cancel the stream, so delivery does not take the
			// part received for a whole file (the batches it stored before stay: an upsert).
			cancel()
			writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument,
				"body: could not be read to its end; rows before the break may have been imported: send the file again (the import is an upsert)")
			return
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		c.answerError(w, r, err)
		return
	}
	_, m := runtime.MarshalerForRequest(c.mux, r)
	data, err := m.Marshal(resp)
	if err != nil {
		c.answerError(w, r, status.Error(codes.Internal, "encode the import's result"))
		return
	}
	w.Header().Set("Content-Type", m.ContentType(resp))
	_, _ = w.Write(data)
}

// answerError answers a failed import as the REST routes answer errors, except that a file
// over delivery's import limits is 413 (not 429: sending it again cannot succeed).
func (c *contactsImport) answerError(w http.ResponseWriter, r *http.Request, err error) {
	st := cleanLogged(r.Context(), c.logger, r.Method+" "+r.URL.Path, err)
	if st.Code() == codes.ResourceExhausted {
		for _, d := range st.Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok && strings.HasPrefix(ei.GetReason(), "IMPORT_") {
				c.refusals.note(r.Context(), MethodRequestTooLarge, clientIPFromContext(r.Context()))
				writeJSONError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, st.Message())
				return
			}
		}
	}
	_, m := runtime.MarshalerForRequest(c.mux, r)
	errorHandler(c.logger)(r.Context(), c.mux, m, w, r, st.Err())
}
