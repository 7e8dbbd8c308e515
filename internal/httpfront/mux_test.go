package httpfront

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// Servers share /APP/STREAM.EXT by extension and /APP/STREAM/FILE by file
// name (one taking the rest); other routes are plain ServeMux patterns,
// /play/APP/FILE among them, which a literal file name under a stream's
// path would conflict with as a pattern of its own.
func TestMuxStreamFiles(t *testing.T) {
	mux := NewMux()
	answer := func(s string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, s+" "+r.PathValue("app")+" "+r.PathValue("file"))
		}
	}
	mux.HandleStreamFile(".flv", answer("flv"))
	mux.HandleStreamFile(".m3u8", answer("hls"))
	mux.HandleStreamPath("snapshot.jpg", answer("snapshot"))
	mux.HandleStreamPath("", answer("segment"))
	mux.HandleFunc("GET /api/v1/x", answer("api"))
	mux.HandleFunc("GET /play/{app}/{file}", answer("play"))
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/live/cam.flv", 200, "flv live cam.flv"},
		{"HEAD", "/live/cam.flv", 200, "flv live cam.flv"}, // the server drops the body
		{"GET", "/live/cam.m3u8", 200, "hls live cam.m3u8"},
		{"GET", "/live/cam.m3u8.flv", 200, "flv live cam.m3u8.flv"},
		{"GET", "/live/cam.mp4", 404, "404 page not found\n"},
		{"POST", "/live/cam.flv", 405, "Method Not Allowed\n"},
		{"GET", "/live/cam/index.m3u8", 200, "segment live index.m3u8"},
		{"GET", "/live/cam/snapshot.jpg", 200, "snapshot live snapshot.jpg"},
		{"GET", "/play/live/cam.flv", 200, "play live cam.flv"},
		{"GET", "/api/v1/x", 200, "api  "},
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.code || w.Body.String() != tc.body {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, w.Code, w.Body, tc.code, tc.body)
		}
	}
}

// Wrap checks the path before anything else, takes the client's address
// from a trusted proxy's header, and applies CORS, in that order.
func TestWrap(t *testing.T) {
	var client string
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { client = r.RemoteAddr }),
		Config{CORSOrigins: []string{"*"}, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	do := func(path, peer, xff string) *httptest.ResponseRecorder {
		client = ""
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.Path, r.RemoteAddr = path, peer
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("/live/../x", "10.0.0.1:1000", "198.51.100.1"); w.Code != http.StatusBadRequest || client != "" ||
		w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("bad path: %d, client %q, headers %v; want 400 before anything else", w.Code, client, w.Header())
	}
	if w := do("/live/x.flv", "10.0.0.1:1000", "198.51.100.1"); client != "198.51.100.1:0" || w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("through a trusted proxy: client %q, headers %v", client, w.Header())
	}
	if do("/live/x.flv", "203.0.113.9:1000", "198.51.100.1"); client != "203.0.113.9:1000" {
		t.Errorf("from an untrusted peer: client %q, want the peer", client)
	}
	// Without trusted proxies the header is never read.
	h = Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { client = r.RemoteAddr }), Config{})
	if do("/live/x.flv", "10.0.0.1:1000", "198.51.100.1"); client != "10.0.0.1:1000" {
		t.Errorf("no trusted proxies: client %q, want the peer", client)
	}
}
