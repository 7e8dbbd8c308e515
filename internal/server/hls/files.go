package hls

import (
	"container/list"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
)

// A session's init files, segments and parts never change once gohlslib
// has them, so each is taken from gohlslib once, by the first request for
// it, and every request is answered from the same bytes with one write.
// The cache follows the playlists' window: a segment leaves it when the
// media playlist no longer lists it, a part when no part of its segment is
// listed; a count and a size bound it besides.

const (
	// maxCachedFiles bounds a session's cached files: a window of
	// segments, the parts of its last segments and the init files, for
	// every track.
	maxCachedFiles = 1024
	// maxCachedBytes bounds the bytes of a session's cached files; a
	// file larger than that is served without being kept.
	maxCachedBytes = 64 << 20
)

// fileKind of a cached file tells which window it leaves with.
const (
	cachedInit = iota
	cachedSegment
	cachedPart
)

// mediaName matches gohlslib's names of init files, segments and parts:
// PREFIX_video1_init.mp4, PREFIX_audio2_seg12.mp4, PREFIX_video1_part40.mp4.
var mediaName = regexp.MustCompile(`^([0-9a-f]{12})_([a-z]+[0-9]+)_(?:init|seg([0-9]+)|part([0-9]+))\.mp4$`)

// cachedFile is one file of a session, or the wait for it to be read.
type cachedFile struct {
	ready  chan struct{} // closed once the fields below are set
	ok     bool          // gohlslib has the file
	status int           // gohlslib's error status when not ok; 0: it has no such file
	body   []byte
	// Header values shared by every answer: net/http only reads them,
	// and a handler adding to them appends to a full slice, which
	// copies.
	contentType, cacheControl, contentLength []string

	name string
	kind int
	num  uint64 // segment or part number
	elem *list.Element
}

// serve answers r with the file.
func (f *cachedFile) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case f.status != 0 && !f.ok:
		w.WriteHeader(f.status)
		return
	case !f.ok:
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	if f.contentType != nil {
		h["Content-Type"] = f.contentType
	}
	if f.cacheControl != nil {
		h["Cache-Control"] = f.cacheControl
	}
	h["Content-Length"] = f.contentLength
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(f.body)
	}
}

// fileCache holds a session's files. Reads are single-flight: the first
// request for a file reads it from gohlslib, concurrent ones wait for it.
type fileCache struct {
	mu    sync.Mutex
	files map[string]*cachedFile
	order list.List // of *cachedFile, oldest first
	bytes int
	// oldest segment and part still listed; older ones are not kept
	minSegment, minPart uint64
}

// get returns the named file, reading it from the session's gohlslib
// muxer if no request did so before. name must not be a part that does
// not exist yet: gohlslib would wait for it.
func (c *fileCache) get(sess *session, name string) *cachedFile {
	c.mu.Lock()
	if f := c.files[name]; f != nil {
		c.mu.Unlock()
		<-f.ready // a read from memory: gohlslib does not wait for these
		return f
	}
	if c.files == nil {
		c.files = make(map[string]*cachedFile)
	}
	f := &cachedFile{ready: make(chan struct{}), name: name}
	c.files[name] = f
	c.mu.Unlock()

	defer close(f.ready)
	sess.read(f)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !f.ok || len(f.body) > maxCachedBytes || !c.inWindow(f) {
		delete(c.files, name)
		return f
	}
	f.elem = c.order.PushBack(f)
	c.bytes += len(f.body)
	for c.order.Len() > maxCachedFiles || c.bytes > maxCachedBytes {
		c.remove(c.order.Front().Value.(*cachedFile))
	}
	return f
}

// classifyCached sets what window f leaves with from its name.
func (f *cachedFile) classify() {
	m := mediaName.FindStringSubmatch(f.name)
	switch {
	case m == nil:
		f.kind = cachedInit // kept for the session: gohlslib has no other names
	case m[3] != "":
		f.kind = cachedSegment
		f.num, _ = strconv.ParseUint(m[3], 10, 64)
	case m[4] != "":
		f.kind = cachedPart
		f.num, _ = strconv.ParseUint(m[4], 10, 64)
	default:
		f.kind = cachedInit
	}
}

func (c *fileCache) inWindow(f *cachedFile) bool {
	switch f.kind {
	case cachedSegment:
		return f.num >= c.minSegment
	case cachedPart:
		return f.num >= c.minPart
	}
	return true
}

// remove forgets a cached file; requests holding it still answer with it.
func (c *fileCache) remove(f *cachedFile) {
	delete(c.files, f.name)
	c.order.Remove(f.elem)
	c.bytes -= len(f.body)
}

// slide drops the files before the oldest segment and part a playlist
// lists.
func (c *fileCache) slide(minSegment, minPart uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.minSegment, c.minPart = minSegment, minPart
	for e := c.order.Front(); e != nil; {
		next := e.Next()
		if f := e.Value.(*cachedFile); !c.inWindow(f) {
			c.remove(f)
		}
		e = next
	}
}

// fileWriter records gohlslib's answer for a file.
type fileWriter struct {
	header http.Header
	status int
	body   []byte
}

func (w *fileWriter) Header() http.Header { return w.header }

func (w *fileWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *fileWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

// read fills f from gohlslib: its bytes and the headers gohlslib sends
// with them.
func (sess *session) read(f *cachedFile) {
	f.classify()
	w := &fileWriter{header: make(http.Header, 2)}
	sess.m.handle(sess.hm, w, gohlslibRequest(f.name, ""))
	if w.status != http.StatusOK {
		f.status = w.status
		return
	}
	f.ok = true
	f.body = make([]byte, len(w.body)) // exactly its size: it may be kept a while
	copy(f.body, w.body)
	f.contentType = fullSlice(w.header["Content-Type"])
	f.cacheControl = fullSlice(w.header["Cache-Control"])
	f.contentLength = []string{strconv.Itoa(len(f.body))}
}

// fullSlice returns a copy of v whose capacity is its length, so that an
// append to it copies.
func fullSlice(v []string) []string {
	if v == nil {
		return nil
	}
	return append([]string(nil), v...)[:len(v):len(v)]
}

// gohlslibRequest is a GET of one of gohlslib's files, which it picks by
// the base name of the path.
func gohlslibRequest(file, rawQuery string) *http.Request {
	return &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: "/" + file, RawQuery: rawQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header),
		Host:       "localhost",
	}
}
