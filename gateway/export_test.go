package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// exportBackend is a DsrService whose DownloadExport sends the manifest, waits for release,
// then sends records and ends with end (nil: the stream's normal end).
type exportBackend struct {
	dsrv1.UnimplementedDsrServiceServer
	records int
	release chan struct{}
	end     error
}

func (b *exportBackend) DownloadExport(req *dsrv1.DownloadExportRequest, s grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error {
	manifest := &dsrv1.ExportManifest{Records: map[string]int64{"analytics": int64(b.records)}, Bytes: 42}
	if err := s.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Manifest{Manifest: manifest}}); err != nil {
		return err
	}
	select {
	case <-b.release:
	case <-s.Context().Done():
		return s.Context().Err()
	}
	for i := range b.records {
		data, _ := structpb.NewStruct(map[string]any{"request": req.GetId(), "n": i})
		rec := &dsrv1.ExportRecord{Participant: "analytics", Type: "event", Data: data}
		if err := s.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Record{Record: rec}}); err != nil {
			return err
		}
	}
	return b.end
}

// startExportEdge serves a gateway whose dsr backend is b, and returns its HTTP test server
// and a gRPC connection to it.
func startExportEdge(t *testing.T, b *exportBackend) (*httptest.Server, *grpc.ClientConn) {
	t.Helper()
	srv := grpc.NewServer()
	dsrv1.RegisterDsrServiceServer(srv, b)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	g, err := New(context.Background(), Config{Logger: slog.New(slog.DiscardHandler)}, []Backend{
		{Package: "campaignmesh.dsr.v1", Conn: conn, RegisterREST: dsrv1.RegisterDsrServiceHandler},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(g)
	t.Cleanup(hs.Close)
	return hs, edgeConn(t, g)
}

// exportLine is one line of the REST export: a message of the stream, or the error ending it.
type exportLine struct {
	Result *struct {
		Manifest *struct {
			Records map[string]string `json:"records"`
		} `json:"manifest"`
		Record *struct {
			Participant string         `json:"participant"`
			Type        string         `json:"type"`
			Data        map[string]any `json:"data"`
		} `json:"record"`
	} `json:"result"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func readLine(t *testing.T, r *bufio.Reader) (exportLine, error) {
	t.Helper()
	raw, err := r.ReadBytes('\n')
	if err != nil {
		return exportLine{}, err
	}
	var l exportLine
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatalf("line %q is not JSON: %v", raw, err)
	}
	return l, nil
}

// The export download streams through REST as newline-delimited JSON, a message per line as
// the backend sends it: the manifest arrives while the backend still holds the records.
func TestExportDownloadStreamsOverRESTAsNDJSON(t *testing.T) {
	b := &exportBackend{records: 3, release: make(chan struct{})}
	hs, _ := startExportEdge(t, b)
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/dsr/requests/dsr_1/export", nil)
	req.Header.Set("Authorization", "Bearer any")
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %d", resp.StatusCode)
	}
	r := bufio.NewReader(resp.Body)
	first := make(chan exportLine, 1)
	go func() {
		l, err := readLine(t, r)
		if err != nil {
			t.Errorf("first line: %v", err)
		}
		first <- l
	}()
	select {
	case l := <-first:
		if l.Result == nil || l.Result.Manifest == nil || l.Result.Manifest.Records["analytics"] != "3" {
			t.Fatalf("first line %+v, want the manifest", l)
		}
	case <-time.After(30 * time.Second): // a deadlock guard: the gateway would be holding the manifest back
		t.Fatal("the manifest did not arrive before the rest of the stream")
	}
	close(b.release)
	for i := range 3 {
		l, err := readLine(t, r)
		if err != nil || l.Result == nil || l.Result.Record == nil || l.Result.Record.Type != "event" || l.Result.Record.Data["n"] != float64(i) {
			t.Fatalf("line %d: %+v %v, want record %d", i+2, l, err, i)
		}
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Fatalf("after the records: %q, want the end of the stream", rest)
	}
}

// A status that ends a REST stream is cleaned like any other answer: a backend's own status
// passes as it is, transport text never reaches the caller, before or after the first line.
func TestExportStreamErrorsAreCleaned(t *testing.T) {
	notFound, _ := apperr.ToStatus(apperr.New(apperr.NotFound, "NOT_FOUND", "export not found"))
	for _, tc := range []struct {
		name    string
		end     error
		code    codes.Code
		message string
	}{
		{"backend status", notFound.Err(), codes.NotFound, "export not found"},
		{"transport text", status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5000000 vs. 4194304)"), codes.ResourceExhausted, "message too large or limit exceeded"},
		{"unknown internal", status.Error(codes.Internal, "pq: relation exports does not exist"), codes.Internal, "internal error (ref "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &exportBackend{records: 1, release: make(chan struct{}), end: tc.end}
			close(b.release)
			hs, _ := startExportEdge(t, b)
			req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/dsr/requests/dsr_1/export", nil)
			resp, err := hs.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			lines := strings.Split(strings.TrimSpace(string(body)), "\n")
			var last exportLine
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || len(lines) != 3 || last.Error == nil {
				t.Fatalf("answer %q, want the manifest, a record and the error", body)
			}
			if codes.Code(last.Error.Code) != tc.code || !strings.HasPrefix(last.Error.Message, tc.message) {
				t.Fatalf("error line %s, want %v %q", lines[len(lines)-1], tc.code, tc.message)
			}
			for _, s := range internalText {
				if strings.Contains(string(body), s) {
					t.Fatalf("answer carries %q: %s", s, body)
				}
			}
		})
	}
}

// The gRPC proxy forwards the export's server stream message by message, in order.
func TestExportDownloadThroughTheGRPCProxy(t *testing.T) {
	b := &exportBackend{records: 50, release: make(chan struct{})}
	close(b.release)
	_, conn := startExportEdge(t, b)
	s, err := dsrv1.NewDsrServiceClient(conn).DownloadExport(context.Background(), &dsrv1.DownloadExportRequest{Id: "dsr_1"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Recv()
	if err != nil || first.GetManifest().GetRecords()["analytics"] != 50 {
		t.Fatalf("first message %v %v, want the manifest", first, err)
	}
	for i := range 50 {
		m, err := s.Recv()
		if err != nil || m.GetRecord().GetData().GetFields()["n"].GetNumberValue() != float64(i) {
			t.Fatalf("message %d: %v %v", i+2, m, err)
		}
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want EOF", err)
	}
}
