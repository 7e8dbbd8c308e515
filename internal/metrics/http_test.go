package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/httpfront"
)

func TestEndpoint(t *testing.T) {
	ready := true
	reg := NewRegistry(NewRefusals(RefusalSources{
		Listeners: map[string]func() connlimit.Refusals{"rtmp": func() connlimit.Refusals { return connlimit.Refusals{PerIP: 3} }},
		HTTPPerIP: func() uint64 { return 2 },
		Sessions:  func() map[string]uint64 { return map[string]uint64{"custom": 5} },
	}))
	mux := httpfront.NewMux()
	Endpoint{Registry: reg, Ready: func() bool { return ready }}.Register(mux)
	get := func(path string) (int, string) {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code, w.Body.String()
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	ready = false
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d, want 503", code)
	}
	if code, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without Pprof: %d, want 404", code)
	}
	code, body := get("/metrics")
	for _, want := range []string{
		`meshcast_connections_refused_total{protocol="rtmp",reason="per_ip"} 3`,
		`meshcast_connections_refused_total{protocol="http",reason="per_ip"} 2`,
		`meshcast_connections_refused_total{protocol="webrtc",reason="viewers_per_ip"} 0`,
		`meshcast_connections_refused_total{protocol="custom",reason="viewers_per_ip"} 5`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) has no %s", code, want)
		}
	}
}
