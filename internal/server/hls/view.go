package hls

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// What requests see of a session.
//
// gohlslib renders a playlist for every request under its muxer's lock and
// wakes every request parked in a blocking reload at every part. Here one
// goroutine per session, the watcher, follows gohlslib instead, and
// publishes a view whenever the playlists change: requests read the
// newest view, and a playlist is rendered by gohlslib once per view and
// shared by every request that asks for it in that view.
//
// The playlists change only when gohlslib rotates a part or a segment, at
// a write of the leading track (the video, or the audio of an audio-only
// stream). The watcher learns of a rotation
//
//   - in low-latency HLS, from gohlslib itself: it makes the blocking
//     reload for the part after the newest, which returns as soon as that
//     part exists;
//   - in HLS, which has no blocking reload, from the feeder: after each
//     write of the leading track the feeder nudges the watcher, which
//     looks up the segment after the newest (a map lookup in gohlslib) and
//     renders the playlist when it exists.
//
// Blocking reloads and requests for a part not yet made wait for the
// view's next channel, closed when the next view replaces it, and are then
// answered from that view: one wake-up per part.

// retryDelay spaces the watcher's attempts when gohlslib fails to render a
// playlist of a running session.
const retryDelay = 100 * time.Millisecond

// view is a session's state as of one rendering of its leading media
// playlist. Segment and part numbers are gohlslib's.
type view struct {
	ready bool          // the playlists have content
	ended bool          // the session is closed: no view follows
	next  chan struct{} // closed when the next view is published

	prefix string // gohlslib's file name prefix
	listing
	// since is when the watcher first saw the segment in progress begun:
	// the publication of the first view that listed the segment before it.
	since time.Time

	mu        sync.Mutex
	playlists map[playlistKey]*rendering
}

// keep records pl as the view's rendering of file.
func (sess *session) keep(v *view, file string, pl []byte) {
	r := &rendering{}
	r.once.Do(func() { sess.rendered(r, file, http.StatusOK, pl) })
	v.playlists[playlistKey{file: file}] = r
}

// nextSegment is the number of the segment in progress.
func (l listing) nextSegment() uint64 { return l.seq + uint64(l.segments) }

// playlistKey names a rendering: a playlist, as a whole or a delta update.
type playlistKey struct {
	file  string
	delta bool
}

// rendering is one playlist as gohlslib rendered it for a view, with no
// query in its URIs.
type rendering struct {
	once   sync.Once
	status int
	raw    []byte
	media  bool
	// out is what is served: raw, with the session's public names for a
	// media playlist. It is redone if the naming became known after the
	// rendering.
	out atomic.Pointer[served]
	mu  sync.Mutex // serialises redoing out
}

// served is a playlist's body as answered, with its Content-Length value.
type served struct {
	names         names
	body          []byte
	contentLength []string
}

// rendering returns the view's rendering of key, rendering it once.
func (sess *session) rendering(v *view, key playlistKey) *rendering {
	v.mu.Lock()
	r := v.playlists[key]
	if r == nil {
		r = &rendering{}
		v.playlists[key] = r
	}
	v.mu.Unlock()
	r.once.Do(func() {
		// The view has content, so gohlslib answers at once.
		status, raw := sess.render(key.file, key.delta, "")
		sess.rendered(r, key.file, status, raw)
		if status == http.StatusOK && r.media {
			sess.frontier.raise(scan(raw)) // gohlslib may be ahead of v
		}
	})
	return r
}

// rendered completes r with gohlslib's answer.
func (sess *session) rendered(r *rendering, file string, status int, raw []byte) {
	r.status, r.raw, r.media = status, raw, sess.playlists[file]
	if status == http.StatusOK {
		nm, _ := sess.seq.names(sess.tag)
		r.out.Store(r.serve(nm))
	}
}

func (r *rendering) serve(nm names) *served {
	body := r.raw
	if r.media {
		body = nm.playlist(r.raw)
	}
	return &served{names: nm, body: body, contentLength: []string{strconv.Itoa(len(body))}}
}

// body returns a rendering as served.
func (r *rendering) body(sess *session) *served {
	o := r.out.Load()
	if !r.media {
		return o
	}
	if nm, _ := sess.seq.names(sess.tag); o.names != nm {
		r.mu.Lock()
		if o = r.out.Load(); o.names != nm {
			o = r.serve(nm)
			r.out.Store(o)
		}
		r.mu.Unlock()
	}
	return o
}

// prerender renders in nv, before it is published, the playlists that
// were asked for in the view before it, so that requests waiting for nv
// find them ready.
func (sess *session) prerender(old, nv *view) {
	old.mu.Lock()
	keys := make([]playlistKey, 0, len(old.playlists))
	for k := range old.playlists {
		keys = append(keys, k)
	}
	old.mu.Unlock()
	for _, k := range keys {
		sess.rendering(nv, k)
	}
}

// render asks gohlslib for a playlist.
func (sess *session) render(file string, delta bool, rawQuery string) (int, []byte) {
	if delta {
		if rawQuery != "" {
			rawQuery += "&"
		}
		rawQuery += "_HLS_skip=YES"
	}
	w := &fileWriter{header: make(http.Header, 2)}
	sess.m.handle(sess.hm, w, gohlslibRequest(file, rawQuery))
	return w.status, w.body
}

// current returns the session's newest view.
func (sess *session) current() *view { return sess.view.Load() }

// publish makes v the newest view and wakes everything waiting for one.
func (sess *session) publish(v *view) {
	old := sess.view.Swap(v)
	close(old.next)
}

// nudge tells the watcher that the feeder wrote a frame of the leading
// track, which may have ended a segment.
func (sess *session) nudge() {
	select {
	case sess.wrote <- struct{}{}:
	default:
	}
}

// watch follows the session's gohlslib muxer and publishes its views
// until the session closes.
func (sess *session) watch() {
	defer close(sess.watched)
	defer func() {
		sess.publish(&view{ended: true, next: make(chan struct{})})
	}()
	leading := sess.leading + "_stream.m3u8"
	// Until the muxer has content, gohlslib holds this request.
	var v *view
	for v == nil {
		status, pl := sess.render(leading, false, "")
		if sess.ctx.Err() != nil {
			return
		}
		if status != http.StatusOK {
			if !sess.retry(status) {
				return
			}
			continue
		}
		sess.seq.learn(pl)
		v = sess.newView(pl)
		sess.keep(v, leading, pl)
	}
	var prev *view
	for {
		sess.files.slide(v.seq, v.firstPart)
		if v.since = time.Now(); prev != nil && prev.nextSegment() == v.nextSegment() {
			v.since = prev.since
		}
		sess.publish(v)
		prev = v
		var pl []byte
		if sess.lowLatency {
			pl = sess.awaitPart(v, leading)
		} else {
			pl = sess.awaitSegment(v, leading)
		}
		if pl == nil {
			return
		}
		nv := sess.newView(pl)
		sess.keep(nv, leading, pl)
		if sess.lowLatency {
			sess.prefetchParts(v, nv)
		}
		sess.prerender(v, nv)
		v = nv
	}
}

// awaitPart returns the leading media playlist once it lists the part
// after the newest of v, or nil once the session closes.
func (sess *session) awaitPart(v *view, leading string) []byte {
	q := "_HLS_msn=" + strconv.FormatUint(v.nextSegment(), 10) + "&_HLS_part=" + strconv.Itoa(v.nextParts)
	for {
		status, pl := sess.render(leading, false, q)
		if sess.ctx.Err() != nil {
			return nil
		}
		if status == http.StatusOK {
			return pl
		}
		// Not expected of gohlslib; try again from what it lists now.
		if !sess.retry(status) {
			return nil
		}
		if status, pl := sess.render(leading, false, ""); status == http.StatusOK {
			if nv := sess.newView(pl); nv.hint > v.hint || nv.nextSegment() > v.nextSegment() {
				return pl
			}
		}
	}
}

// awaitSegment returns the leading media playlist once the segment in
// progress in v is complete, or nil once the session closes.
func (sess *session) awaitSegment(v *view, leading string) []byte {
	next := v.prefix + "_" + sess.leading + "_seg" + strconv.FormatUint(v.nextSegment(), 10) + ".mp4"
	for {
		select {
		case <-sess.ctx.Done():
			return nil
		case <-sess.wrote:
		}
		// The segment is read into the cache here: players ask for it
		// next. Any answer but none at all means gohlslib has it.
		if f := sess.files.get(sess, next); !f.ok && f.status == 0 {
			continue
		}
		for {
			status, pl := sess.render(leading, false, "")
			if sess.ctx.Err() != nil {
				return nil
			}
			if status == http.StatusOK {
				return pl
			}
			if !sess.retry(status) {
				return nil
			}
		}
	}
}

// prefetchParts reads the parts that are new in nv into the cache before
// nv is published, for the requests that wait for them.
func (sess *session) prefetchParts(old, nv *view) {
	for n := old.hint; n < nv.hint && n+8 > nv.hint; n++ {
		for _, id := range sess.streams {
			sess.files.get(sess, nv.prefix+"_"+id+"_part"+strconv.FormatUint(n, 10)+".mp4")
		}
	}
}

// retry notes that gohlslib answered the watcher with status and waits
// retryDelay; it reports false if the session closed meanwhile. The first
// failure of a session is logged.
func (sess *session) retry(status int) bool {
	if sess.renderFailures++; sess.renderFailures == 1 {
		sess.log.Warn("muxer playlist unavailable, retrying", "status", status)
	}
	return sess.sleep(retryDelay)
}

// sleep waits d, and reports false if the session closed meanwhile.
func (sess *session) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-sess.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// newView makes a view from a rendering of the leading media playlist,
// which it keeps.
func (sess *session) newView(pl []byte) *view {
	return &view{ready: true, next: make(chan struct{}), prefix: prefixIn(pl), listing: scan(pl), playlists: make(map[playlistKey]*rendering, 4)}
}

// listing is what a media playlist lists. Segment and part numbers are
// gohlslib's, shared by the tracks of a session.
type listing struct {
	seq       uint64 // number of the first listed segment
	segments  int    // segments listed, gaps included
	lastParts int    // parts of the newest complete segment
	nextParts int    // parts of the segment in progress
	hint      uint64 // number of the next part, the preload hint
	firstPart uint64 // number of the oldest listed part
	target    time.Duration
}

// scan reads a media playlist's listing.
func scan(pl []byte) listing {
	var l listing
	parts, hasPart := 0, false
	for len(pl) > 0 {
		var line []byte
		line, pl, _ = bytes.Cut(pl, []byte("\n"))
		switch {
		case len(line) == 0:
		case line[0] != '#':
			l.segments++
			l.lastParts, parts = parts, 0
		case bytes.HasPrefix(line, []byte("#EXT-X-TARGETDURATION:")):
			secs, _ := strconv.Atoi(string(bytes.TrimSpace(line[len("#EXT-X-TARGETDURATION:"):])))
			l.target = time.Duration(secs) * time.Second
		case bytes.HasPrefix(line, []byte("#EXT-X-MEDIA-SEQUENCE:")):
			l.seq, _ = strconv.ParseUint(string(bytes.TrimSpace(line[len("#EXT-X-MEDIA-SEQUENCE:"):])), 10, 64)
		case bytes.HasPrefix(line, []byte("#EXT-X-PART:")):
			parts++
			if n, ok := partNumber(line); ok && !hasPart {
				l.firstPart, hasPart = n, true
			}
		case bytes.HasPrefix(line, []byte("#EXT-X-PRELOAD-HINT:")):
			l.hint, _ = partNumber(line)
		case bytes.HasPrefix(line, []byte("#EXT-X-SKIP:SKIPPED-SEGMENTS=")):
			// a delta update: the skipped segments precede those listed
			n, _ := strconv.Atoi(string(bytes.TrimSpace(line[len("#EXT-X-SKIP:SKIPPED-SEGMENTS="):])))
			l.segments += n
		}
	}
	l.nextParts = parts
	if !hasPart {
		l.firstPart = l.hint
	}
	return l
}

// frontier is the newest a session's renderings listed. A rendering is
// gohlslib's state when it is made, which may be ahead of the newest view
// while the watcher catches up with gohlslib; players ask for what the
// renderings they got list.
type frontier struct {
	hint atomic.Uint64 // the newest preload hint: gohlslib has every part before it
	next atomic.Uint64 // the newest segment in progress
}

// raise records what a rendering lists.
func (f *frontier) raise(l listing) {
	raiseTo(&f.hint, l.hint)
	raiseTo(&f.next, l.nextSegment())
}

func raiseTo(a *atomic.Uint64, n uint64) {
	for {
		old := a.Load()
		if n <= old || a.CompareAndSwap(old, n) {
			return
		}
	}
}

// hint is the newest preload hint of v and of every rendering.
func (sess *session) hint(v *view) uint64 { return max(v.hint, sess.frontier.hint.Load()) }

// partNumber returns the number of the part a playlist line names.
func partNumber(line []byte) (uint64, bool) {
	i := bytes.Index(line, []byte("_part"))
	if i < 0 {
		return 0, false
	}
	digits := line[i+len("_part"):]
	j := 0
	for j < len(digits) && digits[j] >= '0' && digits[j] <= '9' {
		j++
	}
	n, err := strconv.ParseUint(string(digits[:j]), 10, 64)
	return n, err == nil
}

// hasPart reports whether a view lists part part of segment msn, taking a
// part after the last of a complete segment as the first of the next one
// (RFC 8216bis, 6.2.5.2).
func (v *view) hasPart(msn, part uint64) bool {
	next := v.nextSegment()
	switch {
	case msn == next:
		return part < uint64(v.nextParts)
	case msn+1 == next:
		return part < uint64(v.lastParts) || v.nextParts > 0
	}
	return msn < next
}

// tooFar reports whether a blocking reload for segment msn is refused, as
// gohlslib does: more than one segment past the one in progress, or
// before the first listed. The segment in progress is the newest that v
// or any rendering lists.
func (sess *session) tooFar(v *view, msn uint64) bool {
	next := max(v.nextSegment(), sess.frontier.next.Load())
	return msn > next+1 || msn < v.nextSegment()-uint64(v.segments-1)
}

// errSessionEnded: the session closed while the request waited on it.
var errSessionEnded = errors.New("hls: session ended")

// waitNext waits for the view after v. Waiting requests count against
// maxWaiting.
func (m *muxer) waitNext(ctx context.Context, v *view) error {
	if m.waiting.Add(1) > maxWaiting {
		m.waiting.Add(-1)
		return errTooManyWaiting
	}
	defer m.waiting.Add(-1)
	select {
	case <-v.next:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readyView waits for a view with content, and fails once the session has
// ended.
func (sess *session) readyView(ctx *deadline) (*view, error) {
	v := sess.current()
	for !v.ready {
		if v.ended {
			return nil, errSessionEnded
		}
		if err := sess.m.waitNext(ctx.get(), v); err != nil {
			return nil, err
		}
		v = sess.current()
	}
	return v, nil
}

// deadline is a request's wait bound, its context made only when the
// request has to wait.
type deadline struct {
	parent context.Context
	at     time.Time
	ctx    context.Context
	cancel context.CancelFunc
}

func newDeadline(r *http.Request, d time.Duration) *deadline {
	return &deadline{parent: r.Context(), at: time.Now().Add(d)}
}

func (d *deadline) get() context.Context {
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithDeadline(d.parent, d.at)
	}
	return d.ctx
}

func (d *deadline) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}
