package console

import (
	"bufio"
	"context"
	"encoding/json"
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
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
)

// exportAuth answers WhoAmI for any token: a privacy officer.
type exportAuth struct {
	authv1.UnimplementedAuthServiceServer
}

func (exportAuth) WhoAmI(context.Context, *authv1.WhoAmIRequest) (*authv1.WhoAmIResponse, error) {
	return &authv1.WhoAmIResponse{Subject: "dpo", Permissions: []string{"dsr.manage"}}, nil
}

// exportDSR is a DsrService whose DownloadExport refuses with first (if set), else sends the
// manifest, waits for release, sends records of about 1 KB each and ends with end.
type exportDSR struct {
	dsrv1.UnimplementedDsrServiceServer
	first   error
	records int
	release chan struct{}
	end     error
}

func (b *exportDSR) DownloadExport(req *dsrv1.DownloadExportRequest, s grpc.ServerStreamingServer[dsrv1.DownloadExportResponse]) error {
	if b.first != nil {
		return b.first
	}
	m := &dsrv1.ExportManifest{Records: map[string]int64{"analytics": int64(b.records)}}
	if err := s.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Manifest{Manifest: m}}); err != nil {
		return err
	}
	select {
	case <-b.release:
	case <-s.Context().Done():
		return s.Context().Err()
	}
	pad := strings.Repeat("x", 1000)
	for i := range b.records {
		data, _ := structpb.NewStruct(map[string]any{"n": i, "pad": pad})
		rec := &dsrv1.ExportRecord{Participant: "analytics", Type: "event", Data: data}
		if err := s.Send(&dsrv1.DownloadExportResponse{Item: &dsrv1.DownloadExportResponse_Record{Record: rec}}); err != nil {
			return err
		}
	}
	return b.end
}

// startExportConsole serves a console whose dsr is b, and returns its address and a signed-in
// session cookie.
func startExportConsole(t *testing.T, b *exportDSR) (*httptest.Server, *http.Cookie) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	authv1.RegisterAuthServiceServer(srv, exportAuth{})
	dsrv1.RegisterDsrServiceServer(srv, b)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := New(Config{Logger: slog.New(slog.DiscardHandler)}, API{Auth: authv1.NewAuthServiceClient(conn), DSR: dsrv1.NewDsrServiceClient(conn)})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	far := time.Now().Add(time.Hour).Unix()
	if err := c.sessions.write(rec, session{Tenant: "acme", Access: "token", AccessExpiry: far, Refresh: "r", RefreshExpiry: far, CSRF: "csrf"}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(c)
	t.Cleanup(hs.Close)
	t.Cleanup(srv.Stop) // first: it ends the streams, so a failed test's download ends and hs.Close returns
	return hs, rec.Result().Cookies()[0]
}

func getExport(t *testing.T, hs *httptest.Server, cookie *http.Cookie) *http.Response {
	t.Helper()
	resp, err := tryExport(hs, cookie)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func tryExport(hs *httptest.Server, cookie *http.Cookie) (*http.Response, error) {
	req, _ := http.NewRequest(http.MethodGet, hs.URL+Prefix+"privacy/requests/dsr_1/export", nil)
	req.AddCookie(cookie)
	return hs.Client().Do(req)
}

// The export download is a stream: the manifest reaches the browser while dsr still holds the
// records back, and the records (2 MB here) pass through line by line.
func TestExportDownloadStreams(t *testing.T) {
	b := &exportDSR{records: 2000, release: make(chan struct{})}
	hs, cookie := startExportConsole(t, b)
	type start struct {
		resp *http.Response
		r    *bufio.Reader
		line string
		err  error
	}
	first := make(chan start, 1)
	go func() {
		resp, err := tryExport(hs, cookie)
		if err != nil {
			first <- start{err: err}
			return
		}
		r := bufio.NewReaderSize(resp.Body, 1<<16)
		line, err := r.ReadString('\n')
		first <- start{resp, r, line, err}
	}()
	var s start
	select {
	case s = <-first:
	case <-time.After(30 * time.Second): // a deadlock guard: the console would be holding the manifest back
		t.Fatal("the manifest did not arrive before the records were sent")
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer s.resp.Body.Close()
	if s.resp.StatusCode != http.StatusOK || s.resp.Header.Get("Content-Type") != "application/x-ndjson" ||
		s.resp.Header.Get("Content-Disposition") != `attachment; filename="dsr_1-export.ndjson"` {
		t.Fatalf("export: %d %v", s.resp.StatusCode, s.resp.Header)
	}
	if !strings.HasPrefix(s.line, `{"result":{"manifest":`) {
		t.Fatalf("first line %q, want the manifest", s.line)
	}
	close(b.release)
	n := 0
	for {
		line, err := s.r.ReadString('\n')
		if err == io.EOF {
			break
		}
		var l struct {
			Result struct {
				Record struct{ Data map[string]any }
			}
		}
		if err != nil || json.Unmarshal([]byte(line), &l) != nil || l.Result.Record.Data["n"] != float64(n) {
			t.Fatalf("line %d: %q %v", n+2, line, err)
		}
		n++
	}
	if n != b.records {
		t.Fatalf("%d records, want %d", n, b.records)
	}
}

// A refusal before anything was sent is a page in words with its status; a stream that breaks
// later ends with an error line in words (no internals), so a partial file is never taken for
// a whole one.
func TestExportDownloadErrors(t *testing.T) {
	hs, cookie := startExportConsole(t, &exportDSR{first: status.Error(codes.NotFound, "export of request dsr_1 not found")})
	resp := getExport(t, hs, cookie)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "It does not exist") || strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Errorf("refused export: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}

	b := &exportDSR{records: 2, release: make(chan struct{}), end: status.Error(codes.Internal, "pq: relation export_chunks does not exist")}
	close(b.release)
	hs, cookie = startExportConsole(t, b)
	resp = getExport(t, hs, cookie)
	body, _ = io.ReadAll(resp.Body)
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	var last struct {
		Error struct {
			Code    int
			Message string
		}
	}
	if len(lines) != 4 || json.Unmarshal([]byte(lines[3]), &last) != nil || last.Error.Code != int(codes.Internal) ||
		!strings.Contains(last.Error.Message, "Something went wrong") || strings.Contains(string(body), "pq:") {
		t.Errorf("broken export: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
}
