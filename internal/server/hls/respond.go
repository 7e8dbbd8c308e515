package hls

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/bluenviron/gohlslib/v2"

	"github.com/meshcast/meshcast/internal/streamname"
)

// maxWaiting bounds the requests per muxer parked inside gohlslib. Before a
// stream has content every playlist request waits there until the muxer has
// content or closes, however early its client gave up.
const maxWaiting = 1024

// maxFileLen bounds the file names accepted; gohlslib's are far shorter.
const maxFileLen = 128

// fileKind sorts requested names by how they are served.
type fileKind int

const (
	kindUnknown  fileKind = iota
	kindPlaylist          // index.m3u8, *_stream.m3u8: may wait for content
	kindPart              // LL-HLS parts: a preload hint waits for its part
	kindMedia             // init files and segments: answered at once
)

// classify tells what a requested name can be, so that names gohlslib never
// produces are refused without starting a muxer.
func classify(file string) fileKind {
	if file == "" || len(file) > maxFileLen || file[0] == '.' {
		return kindUnknown
	}
	for i := 0; i < len(file); i++ {
		c := file[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return kindUnknown
		}
	}
	switch {
	case file == "index.m3u8" || strings.HasSuffix(file, "_stream.m3u8"):
		return kindPlaylist
	case strings.Contains(file, "_part") && strings.HasSuffix(file, ".mp4"):
		return kindPart
	case strings.HasSuffix(file, ".mp4") || strings.HasSuffix(file, ".ts"):
		return kindMedia
	}
	return kindUnknown
}

// servePlaylist starts the stream's muxer if needed and waits, at most
// RequestTimeout, for the playlist to exist.
func (s *Server) servePlaylist(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	m, err := s.acquire(name, true, clientKey(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer s.release(m)
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	rec, err := s.handleWaiting(ctx, m, r, file)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// gohlslib lets index.m3u8 be cached for 30s, but a restarted muxer
	// renames every file it lists.
	rec.writeTo(w, r, "no-cache")
}

// handleWaiting runs a request for a playlist, which may wait inside
// gohlslib, retrying on the stream's next muxer when the one it waited on
// was replaced. A media playlist goes to gohlslib with its own numbers and
// comes back with the session's (numbering.go).
func (s *Server) handleWaiting(ctx context.Context, m *muxer, r *http.Request, file string) (*recorder, error) {
	for {
		sess, err := m.await(ctx)
		if err != nil {
			return nil, err
		}
		req := forFile(r, file)
		media := isMediaPlaylist(file)
		if media {
			if nm, ok := sess.seq.names(sess.tag); ok {
				req.URL.RawQuery = nm.query(req.URL.RawQuery)
			} else {
				req.URL.RawQuery = withoutBlocking(req.URL.RawQuery)
			}
		}
		rec, err := s.handleBounded(ctx, m, sess.hm, req)
		if err != nil {
			return nil, err
		}
		// gohlslib answers 500 to requests waiting on a muxer that closes.
		if rec.status == http.StatusInternalServerError && m.current() != sess {
			continue
		}
		if media && rec.status == http.StatusOK {
			sess.seq.learn(rec.body.Bytes())
			nm, _ := sess.seq.names(sess.tag)
			body := nm.playlist(rec.body.Bytes())
			rec.body.Reset()
			rec.body.Write(body)
		}
		return rec, nil
	}
}

// withoutBlocking drops a low-latency playlist request's _HLS_msn and
// _HLS_part, which name segments of a numbering not yet known.
func withoutBlocking(raw string) string {
	if !strings.Contains(raw, "_HLS_") {
		return raw
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return raw
	}
	q.Del("_HLS_msn")
	q.Del("_HLS_part")
	return q.Encode()
}

// running acquires the stream's muxer for a segment or part request, which
// never starts one. When there is no running session it answers the
// request itself and reports false; otherwise the caller releases m.
func (s *Server) running(w http.ResponseWriter, r *http.Request, name streamname.Name) (*muxer, *session, bool) {
	m, err := s.acquire(name, false, "")
	if err != nil {
		s.fail(w, r, err)
		return nil, nil, false
	}
	sess := m.current()
	if sess == nil {
		s.release(m)
		http.NotFound(w, r)
		return nil, nil, false
	}
	return m, sess, true
}

// servePart serves an LL-HLS part, which may wait for the part to exist.
func (s *Server) servePart(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	m, sess, ok := s.running(w, r, name)
	if !ok {
		return
	}
	defer s.release(m)
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	rec, err := s.handleBounded(ctx, m, sess.hm, forFile(r, file))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rec.writeTo(w, r, "")
}

// serveMedia serves an init file or segment straight from the muxer:
// gohlslib answers these without waiting. A public name (numbering.go) is
// taken back to gohlslib's.
func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	m, sess, ok := s.running(w, r, name)
	if !ok {
		return
	}
	defer s.release(m)
	private, ok := s.privateName(r, m, sess, file)
	if !ok {
		http.NotFound(w, r)
		return
	}
	tw := &trackingWriter{ResponseWriter: w}
	m.handle(sess.hm, tw, forFile(r, private))
	if !tw.wrote {
		// gohlslib writes nothing, an empty 200, for names it does not have.
		http.NotFound(w, r)
	}
}

// privateName returns gohlslib's name of a requested file. A player that
// the balancer moved here may ask for a segment before this node served
// any playlist, which tells gohlslib's file prefix: the track's playlist
// is then made for it.
func (s *Server) privateName(r *http.Request, m *muxer, sess *session, file string) (string, bool) {
	nm, _ := sess.seq.names(sess.tag)
	if nm.prefix == "" {
		if p := publicFile.FindStringSubmatch(file); p != nil {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
			defer cancel()
			req := forFile(r, p[1]+"_stream.m3u8")
			req.URL.RawQuery = ""
			if rec, err := s.handleBounded(ctx, m, sess.hm, req); err == nil && rec.status == http.StatusOK {
				sess.seq.learn(rec.body.Bytes())
				nm, _ = sess.seq.names(sess.tag)
			}
		}
	}
	return nm.private(file)
}

// handleBounded runs hm.Handle in its own goroutine, recording the response,
// and gives up when ctx ends. gohlslib's waits ignore the request context and
// end only when content appears or the muxer closes; every muxer closes
// before Close returns, so the goroutine cannot outlive the server.
func (s *Server) handleBounded(ctx context.Context, m *muxer, hm *gohlslib.Muxer, r *http.Request) (*recorder, error) {
	if m.waiting.Add(1) > maxWaiting {
		m.waiting.Add(-1)
		return nil, errTooManyWaiting
	}
	rec := &recorder{header: make(http.Header)}
	done := make(chan struct{})
	started := s.goTracked(func() {
		defer m.waiting.Add(-1)
		defer close(done)
		m.handle(hm, rec, r)
	})
	if !started {
		m.waiting.Add(-1)
		return nil, errServerClosed
	}
	select {
	case <-done:
		return rec, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

var errTooManyWaiting = errors.New("hls: too many requests waiting for this stream")

// fail answers a request that could not be served.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, io.EOF):
		http.Error(w, "stream not found", http.StatusNotFound)
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "playlist not ready", http.StatusServiceUnavailable)
	default:
		http.Error(w, "stream unavailable", http.StatusServiceUnavailable)
	}
}

// preflight answers a CORS preflight request.
func preflight(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "*")
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// forFile returns r addressed to file: gohlslib picks the response by the
// base name of the URL path, whatever route led here. The query is kept; it
// carries LL-HLS parameters and is copied into the playlist's URIs.
func forFile(r *http.Request, file string) *http.Request {
	u := *r.URL
	u.Path, u.RawPath = "/"+file, ""
	r2 := r.WithContext(r.Context())
	r2.URL = &u
	return r2
}

// recorder holds a response produced by a goroutine the request may stop
// waiting for; only that goroutine touches it until it is done.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	return rec.body.Write(b)
}

// writeTo copies the recorded response to w, overriding Cache-Control when
// cacheControl is set. Nothing recorded means gohlslib did not know the name.
func (rec *recorder) writeTo(w http.ResponseWriter, r *http.Request, cacheControl string) {
	if rec.status == 0 {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	for k, v := range rec.header {
		h[k] = v
	}
	if cacheControl != "" {
		h.Set("Cache-Control", cacheControl)
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

// trackingWriter notes whether a handler wrote anything.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
