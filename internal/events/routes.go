package events

import (
	"net/http"
	"sync/atomic"

	"github.com/meshcast/meshcast/internal/httpfront"
)

// Endpoint serves the events' HTTP routes: the Socket.IO endpoint of the
// node's Server, the client library and the demo page. The node registers
// its routes before it knows its ID, which its Server needs: the Server
// is Set once built, and the Socket.IO endpoint answers 503 until then.
type Endpoint struct {
	// Modules is the directory holding the socket.io client package
	// (--web-modules); see ClientFiles.
	Modules string

	srv atomic.Pointer[Server]
}

// Set makes s the Server the endpoint serves.
func (e *Endpoint) Set(s *Server) { e.srv.Store(s) }

// Server returns the Server set, nil before.
func (e *Endpoint) Server() *Server { return e.srv.Load() }

// Register adds the events' routes to mux: the Socket.IO endpoint
// /socket.io/, the client library /socket.io/FILE from Modules, and the
// demo page /events-demo.
func (e *Endpoint) Register(mux *httpfront.Mux) {
	mux.HandleFunc("/socket.io/{$}", func(w http.ResponseWriter, r *http.Request) {
		srv := e.Server()
		if srv == nil {
			http.Error(w, "real-time events are not running", http.StatusServiceUnavailable)
			return
		}
		srv.Handler().ServeHTTP(w, r)
	})
	mux.Handle("GET /socket.io/{file}", ClientFiles(e.Modules))
	mux.Handle("GET /events-demo", DemoPage())
}
