package hls

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/streamname"
)

// variantWait bounds the wait for each variant's playlist when a master
// playlist is made.
const variantWait = 8 * time.Second

// Register adds the server's routes to mux: GET /APP/STREAM/FILE (the
// stream's playlists and segments, and master.m3u8), and GET
// /APP/STREAM.m3u8, which redirects to /APP/STREAM/index.m3u8.
func (s *Server) Register(mux *httpfront.Mux) {
	mux.HandleStreamFile(".m3u8", s.serveShortcut)
	mux.HandleStreamPath("", s.serveFile) // every file under the stream's path no other server names
}

// serveShortcut answers GET /APP/STREAM.m3u8 with a redirect to the
// stream's playlist, query kept.
func (s *Server) serveShortcut(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), strings.TrimSuffix(r.PathValue("file"), ".m3u8"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	target := "/" + string(name) + "/index.m3u8"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, target, http.StatusFound)
}

// serveFile answers GET /APP/STREAM/FILE for a player the authorizer
// admits.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := auth.CheckHTTP(w, r, s.cfg.Auth, auth.Play, name, "hls"); err != nil {
		s.log.Debug("play refused", "stream", name, "protocol", "hls", "remote", r.RemoteAddr, "reason", err)
		return
	}
	if r.PathValue("file") == "master.m3u8" {
		s.serveMaster(w, r, name)
		return
	}
	s.ServeStream(w, r, name, r.PathValue("file"))
}

// serveMaster answers /APP/STREAM/master.m3u8: the stream's own HLS
// variants and those of every rendition that is live in the cluster, in
// one multivariant playlist.
func (s *Server) serveMaster(w http.ResponseWriter, r *http.Request, name streamname.Name) {
	names := []streamname.Name{name}
	if s.cfg.Renditions != nil {
		names = append(names, s.cfg.Renditions(r.Context(), name)...)
	}
	variants := make([]Variant, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), variantWait)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/"+string(n)+"/index.m3u8?"+r.URL.RawQuery, nil)
			rec := httptest.NewRecorder()
			s.ServeStream(rec, req, n, "index.m3u8")
			if rec.Code != http.StatusOK {
				return
			}
			v := Variant{Name: "source", Playlist: rec.Body.Bytes()}
			if i > 0 {
				v.Name = strings.TrimPrefix(n.Stream(), name.Stream()+"_")
				v.Prefix = "../" + n.Stream() + "/"
			}
			variants[i] = v
		}()
	}
	wg.Wait()
	if variants[0].Playlist == nil {
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	var got []Variant
	for _, v := range variants {
		if v.Playlist != nil {
			got = append(got, v)
		}
	}
	w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(MergeMultivariant(got))
}
