package grpcserver_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshtestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/meshtest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
)

// finishedCalls returns the info-or-above call lines of method in logs.
func finishedCalls(logs, method string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"msg":"finished call"`) && strings.Contains(l, `"grpc.method":"`+method+`"`) {
			out = append(out, l)
		}
	}
	return out
}

// Through the real chain at info level: successful calls of a hot method write nothing, while
// its failures and denials are logged as before, and other methods' calls too.
func TestQuietCallsLogFailuresAndDenialsOnly(t *testing.T) {
	h := start(t, grpcserver.WithQuietCalls(meshtestv1.ProbeService_Public_FullMethodName, meshtestv1.ProbeService_Permitted_FullMethodName))
	gw := h.client(t, "gateway")
	admin, viewer := h.token(t, "admin", "t1", "u-admin"), h.token(t, "viewer", "t1", "u-viewer")

	for range 100 {
		if _, err := gw.Public(context.Background(), &meshtestv1.ProbeRequest{Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gw.Permitted(bearer(admin), &meshtestv1.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	if l := append(finishedCalls(h.logs.String(), "Public"), finishedCalls(h.logs.String(), "Permitted")...); len(l) != 0 {
		t.Fatalf("successful hot calls logged at info: %v", l)
	}

	if _, err := gw.Authenticated(bearer(admin), &meshtestv1.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	control := finishedCalls(h.logs.String(), "Authenticated")
	if len(control) != 1 {
		t.Fatalf("a call of another method is not logged: %v", control)
	}
	t.Logf("a successful call's line is %d bytes at info without the option", len(control[0])+1)

	if _, err := gw.Public(context.Background(), &meshtestv1.ProbeRequest{Fail: true}); status.Code(err) != codes.Internal {
		t.Fatalf("failing call: %v", err)
	}
	if _, err := gw.Permitted(bearer(viewer), &meshtestv1.ProbeRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied call: %v", err)
	}
	if _, err := gw.Permitted(context.Background(), &meshtestv1.ProbeRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call without credential: %v", err)
	}
	logs := h.logs.String()
	if l := finishedCalls(logs, "Public"); len(l) != 1 || !strings.Contains(l[0], `"grpc.code":"Internal"`) || !strings.Contains(l[0], `"level":"ERROR"`) {
		t.Errorf("the failed hot call is not logged once at error: %v", l)
	}
	l := finishedCalls(logs, "Permitted")
	if len(l) != 2 || !strings.Contains(l[0], `"grpc.code":"PermissionDenied"`) || !strings.Contains(l[1], `"grpc.code":"Unauthenticated"`) {
		t.Errorf("denied hot calls are not logged: %v", l)
	}
}
