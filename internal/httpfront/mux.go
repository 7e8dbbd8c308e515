package httpfront

import (
	"net/http"
	"strings"
)

// StreamFileRoute is the route of a live stream served as one file,
// /APP/STREAM.EXT (/live/cam.flv, /live/cam.m3u8): its path values are
// "app" and "file".
const StreamFileRoute = "GET /{app}/{file}"

// Mux is the node's route table, handed to each HTTP-facing component's
// Register. It is an http.ServeMux, with method patterns, plus the one
// route several servers share, StreamFileRoute, dispatched by the file's
// extension. Routes are registered before the node serves.
type Mux struct {
	*http.ServeMux
	files []streamFile                // in registration order
	paths map[string]http.HandlerFunc // StreamPathRoute's, by file name; "" for the rest
}

// StreamPathRoute is the route of a file under a live stream's path,
// /APP/STREAM/FILE (HLS playlists and segments, snapshot.jpg): its path
// values are "app", "stream" and "file".
const StreamPathRoute = "GET /{app}/{stream}/{file}"

// HandleStreamPath serves StreamPathRoute requests for the file named
// file with h; file "" takes the files no handler names. Without one,
// those get 404.
func (m *Mux) HandleStreamPath(file string, h http.HandlerFunc) {
	if m.paths == nil {
		m.paths = make(map[string]http.HandlerFunc)
		m.HandleFunc(StreamPathRoute, m.serveStreamPath)
	}
	m.paths[file] = h
}

func (m *Mux) serveStreamPath(w http.ResponseWriter, r *http.Request) {
	if h := m.paths[r.PathValue("file")]; h != nil {
		h(w, r)
		return
	}
	if h := m.paths[""]; h != nil {
		h(w, r)
		return
	}
	http.NotFound(w, r)
}

// streamFile is the handler of StreamFileRoute for one extension.
type streamFile struct {
	ext string
	h   http.HandlerFunc
}

// NewMux returns an empty route table.
func NewMux() *Mux { return &Mux{ServeMux: http.NewServeMux()} }

// HandleStreamFile serves StreamFileRoute requests whose file ends in ext
// (".flv") with h. Files no server claims get 404.
func (m *Mux) HandleStreamFile(ext string, h http.HandlerFunc) {
	if m.files == nil {
		m.HandleFunc(StreamFileRoute, m.serveStreamFile)
	}
	m.files = append(m.files, streamFile{ext, h})
}

func (m *Mux) serveStreamFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	for _, f := range m.files {
		if strings.HasSuffix(file, f.ext) {
			f.h(w, r)
			return
		}
	}
	http.NotFound(w, r)
}
