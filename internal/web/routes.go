package web

import (
	"fmt"
	"net/http"

	"github.com/meshcast/meshcast/internal/httpfront"
)

// Dashboard serves the dashboard's pages and assets.
type Dashboard struct {
	// URLs describes the node's publish and play URLs, for the page a
	// binary built without the dashboard shows instead.
	URLs func() string
}

// Register adds the dashboard's routes to mux: its page at /,
// /watch/APP/STREAM, /cluster and /publish, and its assets under
// AssetPrefix.
func (d Dashboard) Register(mux *httpfront.Mux) {
	page := Page(d.notBuilt)
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /watch/{app}/{stream}", page)
	mux.HandleFunc("GET /cluster", page)
	mux.HandleFunc("GET /publish", page)
	mux.Handle("GET "+AssetPrefix+"{file}", Assets())
}

// notBuilt answers the dashboard's pages when the binary was built without
// it: how to build it, and the node's URLs.
func (d Dashboard) notBuilt(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.URL.Path != "/" {
		w.WriteHeader(http.StatusNotFound)
	}
	var urls string
	if d.URLs != nil {
		urls = d.URLs()
	}
	fmt.Fprintf(w, "meshcast\n\nThis binary was built without its web dashboard. Build the dashboard, then meshcast:\n"+
		"  npm ci && npm run build && go build ./cmd/meshcast\n(make run does all of this.)\n\n%s", urls)
}
