package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// writeKey is the bench's write key: an API key of the bench tenant scoped to events.write only,
// as the gateway's Segment routes require.
const writeKey = "cmk_0123456789abcdef0123456789abcdef_bench"

// benchKeys verifies the bench's one write key (ingest asks auth in the mesh).
type benchKeys struct{}

func (benchKeys) VerifyAPIKey(_ context.Context, secret string) (*authn.Principal, error) {
	if secret != writeKey {
		return nil, errors.New("unknown api key")
	}
	return &authn.Principal{TenantID: tenant, Subject: "bench-write-key", Permissions: []string{rbac.EventsWrite}, Kind: authn.KindAPIKey}, nil
}

// segmentBatch is a 100-event Segment batch (the shape the SDKs send to /v1/batch) whose
// messageIds are unique to (run, caller, call).
func segmentBatch(run string, caller, call int) []byte {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	items := make([]map[string]any, batchSize)
	for j := range items {
		items[j] = map[string]any{"type": "track", "messageId": fmt.Sprintf("%s-%d-%d-%d", run, caller, call, j),
			"userId": fmt.Sprintf("user-%d", j), "event": "impression", "timestamp": now,
			"properties": map[string]any{"campaign_id": "bench", "variant": "a"}}
	}
	body, _ := json.Marshal(map[string]any{"batch": items, "sentAt": now})
	return body
}

// segmentLoad sends Segment batches to url for the bench's duration, gzip-compressed when
// compress is set (by the client, on the same cores: each caller reuses one compressor, as an
// SDK does, so the client's share of the cores stays small), and returns the calls answered 200.
func (b *bench) segmentLoad(ctx context.Context, httpc *http.Client, url, run string, compress bool) (int64, error) {
	zippers := make([]*gzip.Writer, b.callers)
	zipped := make([]bytes.Buffer, b.callers)
	for i := range zippers {
		zippers[i], _ = gzip.NewWriterLevel(&zipped[i], gzip.BestSpeed)
	}
	calls, _, err := load(ctx, b.callers, b.duration, func(_ context.Context, caller, i int) error {
		body := segmentBatch(run, caller, i)
		if compress {
			buf, zw := &zipped[caller], zippers[caller]
			buf.Reset()
			zw.Reset(buf)
			_, _ = zw.Write(body)
			_ = zw.Close()
			body = buf.Bytes()
		}
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.SetBasicAuth(writeKey, "")
		req.Header.Set("Content-Type", "application/json")
		if compress {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("segment status %d", resp.StatusCode)
		}
		return nil
	})
	return calls, err
}
