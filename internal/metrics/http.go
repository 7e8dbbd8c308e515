package metrics

import (
	"io"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/httpfront"
)

// Endpoint serves the node's operational routes: GET /metrics, /healthz,
// /readyz and, with Pprof, the runtime's profiles under /debug/pprof/.
type Endpoint struct {
	// Registry is what /metrics exposes.
	Registry *prometheus.Registry
	// Ready reports whether the node takes new work: /readyz answers 503
	// while it is false (a draining node). Nil: always ready.
	Ready func() bool
	// Pprof serves /debug/pprof/ (--pprof).
	Pprof bool
}

// Register adds the endpoint's routes to mux.
func (e Endpoint) Register(mux *httpfront.Mux) {
	mux.Handle("GET /metrics", Handler(e.Registry))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if e.Ready != nil && !e.Ready() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if e.Pprof {
		mux.HandleFunc("GET /debug/pprof/{$}", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/{profile}", pprof.Index) // heap, goroutine, allocs, ...
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
}
