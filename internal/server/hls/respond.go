package hls

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/streamname"
)

// maxWaiting bounds the requests per muxer waiting for its content, a
// part or a blocking reload's playlist. A waiting request holds only its
// own goroutine, parked until the next view or its deadline; a
// low-latency player keeps up to two waiting (its blocking reload and the
// preload hint's part), so this admits a few thousand players per stream.
const maxWaiting = 8192

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
// RequestTimeout, for the playlist to exist, or for a blocking reload's
// part. A request whose session closes meanwhile goes on with the
// stream's next one.
func (s *Server) servePlaylist(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	m, err := s.acquire(name, true, clientKey(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer s.release(m)
	dl := newDeadline(r, s.cfg.RequestTimeout)
	defer dl.stop()
	for {
		sess := m.current()
		if sess == nil {
			if sess, err = m.await(dl.get()); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		body, status, err := sess.playlist(dl, file, r.URL.RawQuery)
		if errors.Is(err, errSessionEnded) && m.current() != sess {
			continue
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		switch status {
		case http.StatusOK:
		case http.StatusNotFound:
			http.NotFound(w, r)
			return
		default:
			w.WriteHeader(status) // gohlslib's, with no body
			return
		}
		h := w.Header()
		h["Content-Type"] = playlistType
		// gohlslib lets index.m3u8 be cached for 30s, but a restarted
		// muxer renames every file it lists.
		h["Cache-Control"] = noCache
		h["Content-Length"] = body.contentLength
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body.body)
		}
		return
	}
}

// Header values of every playlist answer, shared (see cachedFile).
var (
	playlistType = []string{"application/vnd.apple.mpegurl"}
	noCache      = []string{"no-cache"}
)

// playlist returns a playlist of the session as gohlslib would answer the
// request's query, or gohlslib's error status. A media playlist comes with
// the session's public names (numbering.go), and a low-latency blocking
// reload's _HLS_msn is taken from them to gohlslib's numbers.
func (sess *session) playlist(dl *deadline, file, rawQuery string) (*served, int, error) {
	v, err := sess.readyView(dl)
	if err != nil {
		return nil, 0, err
	}
	media, ok := sess.playlists[file]
	if !ok {
		return nil, http.StatusNotFound, nil
	}
	key := playlistKey{file: file}
	if media && rawQuery != "" {
		var b blocking
		if sess.lowLatency {
			nm, known := sess.seq.names(sess.tag)
			if b, err = parseBlocking(rawQuery, nm, known); err != nil {
				return nil, http.StatusBadRequest, nil
			}
		}
		key.delta = b.delta
		if b.wait {
			if v, err = sess.awaitBlocking(dl, v, b); err != nil {
				if errors.Is(err, errBadRequest) {
					return nil, http.StatusBadRequest, nil
				}
				return nil, 0, err
			}
		}
	}
	rd := sess.rendering(v, key)
	if rd.status != http.StatusOK {
		// gohlslib answers 500 once its muxer is closed.
		if rd.status == http.StatusInternalServerError && sess.ctx.Err() != nil {
			return nil, 0, errSessionEnded
		}
		return nil, rd.status, nil
	}
	body := rd.body(sess)
	if rawQuery != "" {
		// gohlslib copies a request's query into the URIs it lists,
		// without the _HLS_ parameters in media playlists.
		q := rawQuery
		if media {
			q = withoutHLSParams(rawQuery)
		}
		if q != "" {
			b := withQuery(body.body, q)
			body = &served{body: b, contentLength: []string{strconv.Itoa(len(b))}}
		}
	}
	return body, http.StatusOK, nil
}

// awaitBlocking waits for the view that lists the part a blocking reload
// asks for.
func (sess *session) awaitBlocking(dl *deadline, v *view, b blocking) (*view, error) {
	for {
		if v.ended {
			return nil, errSessionEnded
		}
		if sess.tooFar(v, b.msn) {
			return nil, errBadRequest
		}
		if v.hasPart(b.msn, b.part) {
			return v, nil
		}
		if err := sess.m.waitNext(dl.get(), v); err != nil {
			return nil, err
		}
		v = sess.current()
	}
}

var errBadRequest = errors.New("hls: bad request")

// blocking is what a low-latency media playlist request asks for:
// a delta update, and whether and for which part (gohlslib's numbers) it
// waits.
type blocking struct {
	delta     bool
	wait      bool
	msn, part uint64
}

// parseBlocking reads a low-latency playlist request's _HLS_ parameters as
// gohlslib does, once _HLS_msn is taken back to gohlslib's numbers
// (names.query). Before the numbering is known the request does not wait.
func parseBlocking(rawQuery string, nm names, known bool) (blocking, error) {
	var b blocking
	if !strings.Contains(rawQuery, "_HLS_") {
		return b, nil
	}
	q, _ := url.ParseQuery(nm.query(rawQuery)) // gohlslib reads what parses
	skip := first(q, "_HLS_skip")
	b.delta = skip == "YES" || skip == "v2"
	if !known {
		return b, nil
	}
	msn, part := first(q, "_HLS_msn"), first(q, "_HLS_part")
	var err error
	if msn != "" {
		if b.msn, err = strconv.ParseUint(msn, 10, 64); err != nil {
			return b, errBadRequest
		}
	}
	if part != "" {
		if b.part, err = strconv.ParseUint(part, 10, 64); err != nil {
			return b, errBadRequest
		}
	}
	switch {
	case msn != "":
		b.wait = true
	case part != "":
		return b, errBadRequest // a part without its segment
	}
	return b, nil
}

// first is a query parameter's first value.
func first(q url.Values, key string) string {
	if v := q[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// withoutHLSParams is a media playlist request's query as gohlslib copies
// it into URIs: without its _HLS_ parameters.
func withoutHLSParams(rawQuery string) string {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return rawQuery
	}
	for k := range q {
		if strings.HasPrefix(k, "_HLS_") {
			delete(q, k)
		}
	}
	return q.Encode()
}

// withQuery appends "?"+query to every URI of a playlist rendered without
// one, the way gohlslib writes a request's query into them: URI lines
// other than gap segments', and URI attributes.
func withQuery(pl []byte, query string) []byte {
	out := make([]byte, 0, len(pl)+(bytes.Count(pl, []byte("\n"))+1)*(len(query)+1))
	for len(pl) > 0 {
		line, rest, nl := bytes.Cut(pl, []byte("\n"))
		pl = rest
		switch {
		case len(line) == 0:
			out = append(out, line...)
		case line[0] != '#':
			out = append(out, line...)
			if string(line) != "gap.mp4" {
				out = append(out, '?')
				out = append(out, query...)
			}
		default:
			i := uriAttrStart(line)
			j := -1
			if i >= 0 {
				j = bytes.IndexByte(line[i:], '"')
			}
			if j < 0 {
				out = append(out, line...)
				break
			}
			out = append(out, line[:i+j]...)
			out = append(out, '?')
			out = append(out, query...)
			out = append(out, line[i+j:]...)
		}
		if nl {
			out = append(out, '\n')
		}
	}
	return out
}

// uriAttrStart returns where the value of a tag's URI attribute starts, or
// -1.
func uriAttrStart(line []byte) int {
	for off := 0; ; {
		i := bytes.Index(line[off:], []byte(`URI="`))
		if i < 0 {
			return -1
		}
		i += off
		if i > 0 && (line[i-1] == ':' || line[i-1] == ',') {
			return i + len(`URI="`)
		}
		off = i + 1
	}
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

// servePart serves an LL-HLS part that a rendering listed. The part the
// newest preload hint names is waited for, at most RequestTimeout, and so
// is the one after it.
func (s *Server) servePart(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	m, sess, ok := s.running(w, r, name)
	if !ok {
		return
	}
	defer s.release(m)
	parsed := mediaName.FindStringSubmatch(file)
	if !sess.lowLatency || parsed == nil || parsed[4] == "" {
		http.NotFound(w, r)
		return
	}
	n, err := strconv.ParseUint(parsed[4], 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	dl := newDeadline(r, s.cfg.RequestTimeout)
	defer dl.stop()
	v, err := sess.readyView(dl)
	for err == nil && parsed[1] == v.prefix && n >= sess.hint(v) && n <= sess.hint(v)+1 {
		if err = m.waitNext(dl.get(), v); err == nil {
			if v = sess.current(); v.ended {
				err = errSessionEnded
			}
		}
	}
	switch {
	case errors.Is(err, errSessionEnded):
		http.NotFound(w, r) // a part of a closed session is never made
	case err != nil:
		s.fail(w, r, err)
	case parsed[1] != v.prefix || n >= sess.hint(v):
		http.NotFound(w, r)
	default:
		sess.files.get(sess, file).serve(w, r)
	}
}

// serveMedia serves an init file or segment: from memory, once a request
// has read it from gohlslib. A public name (numbering.go) is taken back to
// gohlslib's.
func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	m, sess, ok := s.running(w, r, name)
	if !ok {
		return
	}
	defer s.release(m)
	nm, _ := sess.seq.names(sess.tag)
	if nm.prefix == "" && publicFile.MatchString(file) {
		// A player that the balancer moved here may ask for a segment
		// before this node served any playlist: the prefix is known
		// once the muxer has content.
		dl := newDeadline(r, s.cfg.RequestTimeout)
		_, err := sess.readyView(dl)
		dl.stop()
		if err != nil && !errors.Is(err, errSessionEnded) {
			s.fail(w, r, err)
			return
		}
		nm, _ = sess.seq.names(sess.tag)
	}
	private, ok := nm.private(file)
	if !ok {
		http.NotFound(w, r)
		return
	}
	sess.awaitComing(r, s.cfg.RequestTimeout, private)
	sess.files.get(sess, private).serve(w, r)
}

// awaitComing waits while the segment named private is the one this
// session is making: the numbering is the same on every node muxing the
// stream, and a player that a balancer moved here may ask for a segment
// another node listed a moment before this one completes it; it gets the
// segment, not a 404. It waits at most until the segment is half a target
// duration late, and at most timeout, so a stream that stopped here sends
// its players to their next playlist soon. Other files are not waited for.
func (sess *session) awaitComing(r *http.Request, timeout time.Duration, private string) {
	v := sess.current()
	n, ok := segmentNumber(private, v.prefix)
	coming := func() bool { return v.ready && !v.ended && n == v.nextSegment() }
	if !ok || !coming() {
		return
	}
	until := v.since.Add(v.target + v.target/2)
	if limit := time.Now().Add(timeout); until.After(limit) {
		until = limit
	}
	ctx, cancel := context.WithDeadline(r.Context(), until)
	defer cancel()
	for coming() {
		if sess.m.waitNext(ctx, v) != nil {
			return
		}
		v = sess.current()
	}
}

// segmentNumber returns the number of the segment that gohlslib's name
// private names, if it is a segment of the session whose file prefix is
// prefix. It allocates nothing: every segment request asks.
func segmentNumber(private, prefix string) (uint64, bool) {
	rest, ok := strings.CutPrefix(private, prefix)
	if !ok || prefix == "" {
		return 0, false
	}
	i := strings.LastIndex(rest, "_seg")
	if i < 0 {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest[i+len("_seg"):], ".mp4")
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, ok && err == nil
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
