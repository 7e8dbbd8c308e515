package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/flv"
)

// An HLS player here behaves as hls.js does with its default settings,
// one variant (the first) and its audio rendition:
//
//   - it loads the multivariant playlist, then the video and the audio
//     media playlists side by side, each on its own keep-alive connection
//     (as a browser's loaders do), each media playlist's init segment once
//     (again when EXT-X-MAP changes);
//   - HLS: it starts 3 target durations (or the playlist's HOLD-BACK)
//     behind the live edge (liveSyncDurationCount), fetches every new
//     segment in order, and reloads the media playlist a target duration
//     after the last load, or the last segment's duration when shorter, and
//     half a target duration when the playlist had nothing new;
//   - LL-HLS: it starts PART-HOLD-BACK behind the live edge, at the last
//     independent part before that point, and fetches every part as it
//     appears: it asks for the playlist's EXT-X-PRELOAD-HINT part, which the
//     server holds until the part exists, then reloads the playlist with
//     _HLS_msn/_HLS_part for that part (answered at once) to learn the next
//     hint; without a hint it makes a blocking playlist reload for the next
//     part and then fetches it. A playlist that cannot block (a static file
//     server's copy) is played as HLS;
//   - failed requests are retried after 1, 2, 4 and 8 s for network errors
//     and 5xx answers; 4xx answers are not retried (hls.js's defaults).
//
// The video track drives the measures. Every video frame carries its frame
// number (frameMarker), found by scanning each segment or part as it is
// read, so each frame's send time is known. Playback is modelled on the
// send-time axis: the publisher sends frames in real time, so a frame's
// send time is its media time shifted onto the wall clock. Playback starts
// when the media at the start position is buffered, plays in real time, and
// stalls when the playhead reaches the end of the buffered media (the last
// frame received plus one frame), resuming when more arrives. The audio
// track is fetched the same way but has no frame numbers: it counts for
// requests and bytes, and the playhead follows the video.
//
// Measures: every request's latency (sent to last byte); the stalls; the
// distance behind live, now minus the send time of the media at the
// playhead, sampled as each video segment or part arrives; for LL-HLS,
// each video part's delivery: its last byte's arrival minus the send time
// of the frame after its last one, which the server needs before it can
// close the part; frames delivered, counted once each by send time; per
// frame latency for probes (last byte minus send time: segments make it
// large); time to first frame, from the first request to the first
// segment or independent part; bytes of media (playlists not counted).

// hlsRetries is how many times a failed request is retried.
const hlsRetries = 4

// maxPlaylist bounds a playlist body.
const maxPlaylist = 4 << 20

// maxChunkFrames bounds the frame numbers kept of one segment or part.
const maxChunkFrames = 4096

// errStreamEnded is a media playlist that ended (EXT-X-ENDLIST).
var errStreamEnded = errors.New("hls: the playlist ended")

// playHLS plays the HLS stream at u until ctx ends or a request fails for
// good. lowLatency plays it as LL-HLS.
func (p *player) playHLS(ctx context.Context, u *url.URL, lowLatency bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	video := newHLSTrack(p, u, lowLatency, true)
	defer video.c.close()
	p.playStart = time.Now()
	if err := video.loadPlaylist(ctx, nil); err != nil {
		return err
	}
	p.joined()
	index := video.base
	mv, ok := parseMultivariant(video.body)
	switch {
	case ok:
		vu, err := index.Parse(mv.video)
		if err != nil {
			return fmt.Errorf("variant %q: %w", mv.video, err)
		}
		video.setBase(vu)
		video.loaded = false
	case video.pl.parse(video.body):
		video.loaded = true // the play URL is a media playlist
	default:
		return fmt.Errorf("GET %s: not an HLS playlist", index.Redacted())
	}
	if ok && mv.audio != "" {
		au, err := index.Parse(mv.audio)
		if err != nil {
			return fmt.Errorf("audio rendition %q: %w", mv.audio, err)
		}
		audio := newHLSTrack(p, au, lowLatency, false)
		var audioErr atomic.Value
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer audio.c.close()
			// The end of the audio playlist ends nothing: the video's ends
			// the play.
			if err := audio.run(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errStreamEnded) {
				audioErr.Store(err)
				cancel()
			}
		}()
		defer func() { cancel(); <-done }()
		err = video.run(ctx)
		if !errors.Is(err, errStreamEnded) {
			cancel() // else the audio plays to its own end
		}
		<-done
		if v := audioErr.Load(); v != nil {
			return fmt.Errorf("audio: %w", v.(error))
		}
		return err
	}
	return video.run(ctx)
}

// settle is how long after the window the frames sent in it may still be
// on their way: a second, plus, with HLS players, two of the longest
// segments (HLS) or parts (LL-HLS) they wait for: one to be closed and
// listed, one for the player's next look at the playlist.
func (r *runner) settle() time.Duration {
	return time.Second + 2*time.Duration(r.hlsDelay.Load())
}

// noteDelay records that the player waits for segments or parts of this
// many seconds.
func (tr *hlsTrack) noteDelay(seconds float64) {
	d := int64(seconds * float64(time.Second))
	for {
		m := tr.p.r.hlsDelay.Load()
		if d <= m || tr.p.r.hlsDelay.CompareAndSwap(m, d) {
			return
		}
	}
}

// hlsTrack is one media playlist a player follows, with its connection.
// It belongs to one goroutine.
type hlsTrack struct {
	p      *player
	video  bool // carries the frame numbers and drives playback
	ll     bool // LL-HLS: parts, blocking reloads, preload hints
	hints  bool // asks for preload hints; cleared when the server refuses one
	c      httpConn
	base   *url.URL // the playlist's URL
	dir    []byte   // base's path up to its last '/'
	reqURI []byte   // base's path and query
	pl     mediaPlaylist
	body   []byte // the playlist body pl points into
	loaded bool   // pl holds a playlist not yet acted on
	path   []byte // request scratch
	scan   []byte // media body buffer
	frames []uint32
	timer  *time.Timer

	next     hlsPos // the next media to fetch; part -1 asks for a whole segment
	started  bool   // next is set
	initURI  string // the init segment loaded
	prevLast int64  // the newest finished segment of the previous load

	// Video only.
	pb        playback
	offset    time.Duration // from the first media's start to playback's
	lastFrame uint32        // the newest frame counted
	frameDur  time.Duration
}

func newHLSTrack(p *player, u *url.URL, lowLatency, video bool) *hlsTrack {
	tr := &hlsTrack{p: p, video: video, ll: lowLatency, hints: true, scan: make([]byte, 16<<10), prevLast: -1}
	tr.setBase(u)
	if video {
		tr.frameDur = frameInterval(p.r.pub.src)
	}
	return tr
}

// frameInterval is the source's average time between video frames.
func frameInterval(src *source) time.Duration {
	n := 0
	for _, t := range src.tags {
		if t.typ == flv.TagVideo {
			n++
		}
	}
	if n == 0 {
		return 33 * time.Millisecond
	}
	return time.Duration(src.duration) * time.Millisecond / time.Duration(n)
}

func (tr *hlsTrack) setBase(u *url.URL) {
	tr.base = u
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	i := len(p)
	for i > 0 && p[i-1] != '/' {
		i--
	}
	tr.dir = append(tr.dir[:0], p[:i]...)
	tr.reqURI = append(tr.reqURI[:0], u.RequestURI()...)
}

// target resolves ref against the playlist's URL into tr.path, without
// allocating when ref is a plain relative name, as segments' are.
func (tr *hlsTrack) target(ref []byte) (scheme, host string, err error) {
	if plainRef(ref) {
		tr.path = append(append(tr.path[:0], tr.dir...), ref...)
		return tr.base.Scheme, tr.base.Host, nil
	}
	r, err := url.Parse(string(ref))
	if err != nil {
		return "", "", fmt.Errorf("URI %q: %w", ref, err)
	}
	u := tr.base.ResolveReference(r)
	tr.path = append(tr.path[:0], u.RequestURI()...)
	return u.Scheme, u.Host, nil
}

// plainRef reports whether ref is a relative path in the playlist's
// directory: no scheme, no leading '/', no dot segments.
func plainRef(ref []byte) bool {
	if len(ref) == 0 || ref[0] == '/' || ref[0] == '.' || ref[0] == '?' || ref[0] == '#' {
		return false
	}
	for i, c := range ref {
		switch c {
		case ':':
			return false
		case '/':
			if bytes.Contains(ref[i:], []byte("/.")) {
				return false
			}
		case '?', '#':
			return true
		}
	}
	return true
}

// open sends a GET for tr.path to scheme://host and reads the answer's
// head, retrying failures as hls.js does and following redirects. For a
// playlist (isPlaylist), a redirect moves the track's base URL.
func (tr *hlsTrack) open(ctx context.Context, scheme, host string, isPlaylist bool) error {
	redirects := 0
	for attempt := 0; ; {
		err := tr.c.start(ctx, scheme, host, tr.path)
		if err == nil {
			st := tr.c.status
			if st == 200 {
				return nil
			}
			done, ferr := tr.c.finish(tr.scan)
			if ferr == nil {
				tr.requested(done)
			}
			if (st == 301 || st == 302 || st == 303 || st == 307 || st == 308) && tr.c.location != "" && redirects < 5 {
				redirects++
				from := &url.URL{Scheme: scheme, Host: host}
				if from, err = from.Parse(string(tr.path)); err == nil {
					var to *url.URL
					if to, err = from.Parse(tr.c.location); err == nil {
						if isPlaylist {
							tr.setBase(to)
						}
						scheme, host = to.Scheme, to.Host
						tr.path = append(tr.path[:0], to.RequestURI()...)
						continue
					}
				}
				return fmt.Errorf("redirect to %q: %w", tr.c.location, err)
			}
			err = statusError{st}
			if st >= 400 && st < 500 && st != 429 {
				return fmt.Errorf("GET %s: %w", tr.path, err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == hlsRetries {
			return fmt.Errorf("GET %s: %w", tr.path, err)
		}
		if err := tr.sleep(ctx, time.Second<<attempt); err != nil {
			return err
		}
		attempt++
	}
}

// requested records a request answered at done.
func (tr *hlsTrack) requested(done time.Time) {
	if tr.p.r.inWindow(done) {
		tr.p.t.requests.add(done.Sub(tr.c.sent))
	}
}

func (tr *hlsTrack) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if tr.timer == nil {
		tr.timer = time.NewTimer(d)
	} else {
		tr.timer.Reset(d)
	}
	select {
	case <-tr.timer.C:
		return nil
	case <-ctx.Done():
		tr.timer.Stop()
		return ctx.Err()
	}
}

// loadPlaylist GETs the track's playlist into tr.body: as it is when at is
// nil, else as a blocking reload for the part at *at.
func (tr *hlsTrack) loadPlaylist(ctx context.Context, at *hlsPos) error {
	tr.path = append(tr.path[:0], tr.reqURI...)
	if at != nil {
		if tr.base.RawQuery != "" {
			tr.path = append(tr.path, '&')
		} else {
			tr.path = append(tr.path, '?')
		}
		tr.path = append(tr.path, "_HLS_msn="...)
		tr.path = strconv.AppendInt(tr.path, at.msn, 10)
		tr.path = append(tr.path, "&_HLS_part="...)
		tr.path = strconv.AppendInt(tr.path, int64(at.part), 10)
		if tr.pl.canSkip {
			tr.path = append(tr.path, "&_HLS_skip=YES"...)
		}
	}
	if err := tr.open(ctx, tr.base.Scheme, tr.base.Host, true); err != nil {
		return err
	}
	tr.body = tr.body[:0]
	for {
		if len(tr.body) == cap(tr.body) {
			if len(tr.body) >= maxPlaylist {
				tr.c.close()
				return fmt.Errorf("GET %s: playlist over %d bytes", tr.path, maxPlaylist)
			}
			tr.body = append(tr.body, make([]byte, max(4<<10, len(tr.body)))...)[:len(tr.body)]
		}
		n, err := tr.c.read(tr.body[len(tr.body):cap(tr.body)])
		tr.body = tr.body[:len(tr.body)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.c.close()
			return fmt.Errorf("GET %s: %w", tr.path, err)
		}
	}
	_, err := tr.finish(0) // playlists are not counted as bytes
	return err
}

// reload loads the media playlist into tr.pl, blocking for at if not nil.
func (tr *hlsTrack) reload(ctx context.Context, at *hlsPos) error {
	if err := tr.loadPlaylist(ctx, at); err != nil {
		return err
	}
	if !tr.pl.parse(tr.body) {
		return fmt.Errorf("GET %s: not a media playlist", tr.base.Redacted())
	}
	return nil
}

// run follows the track's media playlist until ctx ends.
func (tr *hlsTrack) run(ctx context.Context) error {
	if !tr.loaded {
		if err := tr.reload(ctx, nil); err != nil {
			return err
		}
	}
	if tr.ll && tr.pl.canBlock && tr.pl.partTarget > 0 {
		tr.noteDelay(tr.pl.partTarget)
		return tr.runLL(ctx)
	}
	tr.ll = false
	tr.noteDelay(tr.pl.target)
	return tr.runHLS(ctx)
}

// runHLS polls the playlist and fetches each new segment.
func (tr *hlsTrack) runHLS(ctx context.Context) error {
	loadStart := time.Now()
	for {
		last := tr.pl.lastComplete()
		updated := last > tr.prevLast
		tr.prevLast = max(tr.prevLast, last)
		if !tr.started {
			tr.restart()
		}
		if err := tr.fetchListed(ctx); err != nil {
			return err
		}
		if tr.pl.endList && tr.next.msn > tr.pl.last() {
			return errStreamEnded
		}
		interval := time.Duration(tr.pl.target * float64(time.Second))
		if s := tr.pl.seg(last); updated && s != nil && s.dur > 0 && s.dur < tr.pl.target {
			interval = time.Duration(s.dur * float64(time.Second))
		}
		if !updated {
			interval /= 2
		}
		interval = max(interval, 100*time.Millisecond)
		if err := tr.sleep(ctx, interval-time.Since(loadStart)); err != nil {
			return err
		}
		loadStart = time.Now()
		if err := tr.reload(ctx, nil); err != nil {
			return err
		}
	}
}

// runLL fetches each part as it appears.
func (tr *hlsTrack) runLL(ctx context.Context) error {
	for {
		if !tr.started {
			tr.restart()
		}
		if err := tr.fetchListed(ctx); err != nil {
			return err
		}
		if tr.pl.endList && tr.next.msn > tr.pl.last() {
			return errStreamEnded
		}
		want := tr.next
		if want.part < 0 {
			want.part = 0
		}
		if tr.hints && tr.pl.hint != nil && tr.pl.after() == want {
			// The hinted part is the next one: the server answers when it
			// exists. Then the playlist that lists it (at once) gives the
			// next hint.
			var mapURI []byte
			if n := len(tr.pl.segs); n > 0 {
				mapURI = tr.pl.segs[n-1].mapURI
			}
			err := tr.fetch(ctx, tr.pl.hint, mapURI, true, want.part == 0)
			if err == nil {
				tr.next = hlsPos{want.msn, want.part + 1}
				if err = tr.reload(ctx, &want); err == nil {
					continue
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var se statusError
			if !errors.As(err, &se) || se.code >= 500 {
				return err
			}
			if tr.next == want {
				tr.hints = false // the server does not serve hints
			}
		}
		err := tr.reload(ctx, &want)
		var se statusError
		if errors.As(err, &se) && se.code >= 400 && se.code < 500 {
			// The server refuses to block for that part (a number it no
			// longer or does not yet list): the playlist as it is.
			err = tr.reload(ctx, nil)
		}
		if err != nil {
			return err
		}
		if tr.pl.after() == want {
			// Answered without the part: a server that does not block
			// (a static copy of a low-latency playlist). Poll instead.
			if err := tr.sleep(ctx, time.Duration(tr.pl.partTarget*float64(time.Second)/2)); err != nil {
				return err
			}
		}
	}
}

// restart picks where to start playing in the playlist, as hls.js does:
// its target latency behind the live edge, at the last independent part
// before that point (LL-HLS) or the segment holding it. Playback then
// starts at that point.
func (tr *hlsTrack) restart() {
	pl := &tr.pl
	latency := 3 * pl.target
	if pl.holdBack > 0 {
		latency = pl.holdBack
	}
	if tr.ll && pl.partHoldBack > 0 {
		latency = pl.partHoldBack
	}
	var edge float64
	for _, s := range pl.segs {
		if s.complete {
			edge += s.dur
		} else if tr.ll {
			for _, p := range pl.parts[s.part0 : s.part0+s.nParts] {
				edge += p.dur
			}
		}
	}
	target := max(0, edge-latency)
	tr.started = true
	tr.pb = playback{}
	seconds := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	if tr.ll {
		best, bestAt := hlsPos{-1, 0}, 0.0
		var t float64
	segs:
		for _, s := range pl.segs {
			at := t
			for k, p := range pl.parts[s.part0 : s.part0+s.nParts] {
				if best.msn >= 0 && at > target {
					break segs
				}
				if (p.independent || !pl.anyIndep) && !p.gap {
					best, bestAt = hlsPos{s.msn, k}, at
				}
				at += p.dur
			}
			if s.complete {
				t += s.dur
			} else {
				t = at
			}
		}
		if best.msn >= 0 {
			tr.next, tr.offset = best, seconds(max(0, target-bestAt))
			return
		}
	}
	var t float64
	for _, s := range pl.segs {
		if !s.complete {
			break
		}
		if target < t+s.dur {
			if !s.gap {
				tr.next, tr.offset = hlsPos{s.msn, -1}, seconds(target-t)
				return
			}
			target = t + s.dur // past the gap
		}
		t += s.dur
	}
	tr.next, tr.offset = hlsPos{pl.lastComplete() + 1, -1}, 0
	if tr.ll {
		tr.next.part = 0
	}
}

// fetchListed fetches, in order, the media the playlist lists from
// tr.next on.
func (tr *hlsTrack) fetchListed(ctx context.Context) error {
	rejoined := false
	for ctx.Err() == nil {
		pl := &tr.pl
		s := pl.seg(tr.next.msn)
		if s == nil {
			if len(pl.segs) == 0 || (tr.next.msn >= pl.first() && tr.next.msn <= pl.last()+1) || rejoined {
				return nil
			}
			// Out of the playlist's window (left behind, or a restarted
			// numbering): start again at the live point, as hls.js does.
			tr.restart()
			rejoined = true
			continue
		}
		switch {
		case tr.next.part < 0 || (s.complete && s.nParts == 0):
			if !s.complete {
				if !tr.ll {
					return nil
				}
				tr.next.part = 0
				continue
			}
			if !s.gap {
				if err := tr.fetch(ctx, s.uri, s.mapURI, false, true); err != nil {
					return err
				}
			}
			tr.next = hlsPos{s.msn + 1, -1}
			if tr.ll {
				tr.next.part = 0
			}
		case tr.next.part < s.nParts:
			p := pl.parts[s.part0+tr.next.part]
			if !p.gap {
				if err := tr.fetch(ctx, p.uri, s.mapURI, true, p.independent || !pl.anyIndep); err != nil {
					return err
				}
			}
			tr.next.part++
		case s.complete:
			tr.next = hlsPos{s.msn + 1, 0}
		default:
			return nil
		}
	}
	return ctx.Err()
}

// fetch GETs a segment or part (and first the init segment mapURI, when
// another than the one loaded) and measures it.
func (tr *hlsTrack) fetch(ctx context.Context, ref, mapURI []byte, part, independent bool) error {
	if mapURI != nil && string(mapURI) != tr.initURI {
		if err := tr.fetchInit(ctx, mapURI); err != nil {
			return err
		}
	}
	scheme, host, err := tr.target(ref)
	if err != nil {
		return err
	}
	if err := tr.open(ctx, scheme, host, false); err != nil {
		return err
	}
	var n int64
	frames := tr.frames[:0]
	keep := 0
	tail := len(frameMarker) + seqLen - 1 // bytes that may hold a marker cut by the buffer's end
	for {
		m, err := tr.c.read(tr.scan[keep:])
		n += int64(m)
		if tr.video {
			buf := tr.scan[:keep+m]
			i := 0
			for {
				j := bytes.Index(buf[i:], frameMarker[:])
				if j < 0 {
					break
				}
				j += i
				if j+len(frameMarker)+seqLen > len(buf) {
					break
				}
				seq, _ := frameNumber(buf[j : j+len(frameMarker)+seqLen])
				if len(frames) < maxChunkFrames {
					frames = append(frames, seq)
				} else {
					frames[len(frames)-1] = seq
				}
				i = j + len(frameMarker) + seqLen
			}
			keep = copy(tr.scan, buf[max(i, len(buf)-tail):])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.c.close()
			return fmt.Errorf("GET %s: %w", tr.path, err)
		}
	}
	done, err := tr.finish(n)
	if err != nil {
		return err
	}
	tr.frames = frames
	if tr.video {
		tr.received(done, part, independent)
	}
	return nil
}

func (tr *hlsTrack) fetchInit(ctx context.Context, ref []byte) error {
	scheme, host, err := tr.target(ref)
	if err != nil {
		return err
	}
	if err := tr.open(ctx, scheme, host, false); err != nil {
		return err
	}
	var n int64
	for {
		m, err := tr.c.read(tr.scan)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			tr.c.close()
			return fmt.Errorf("GET %s: %w", tr.path, err)
		}
	}
	if _, err := tr.finish(n); err != nil {
		return err
	}
	tr.initURI = string(ref)
	return nil
}

// finish ends a media request whose body of n bytes was read: it
// returns when its last byte arrived, counted as a request and as bytes.
func (tr *hlsTrack) finish(n int64) (time.Time, error) {
	done, err := tr.c.finish(tr.scan)
	if err != nil {
		return done, fmt.Errorf("GET %s: %w", tr.path, err)
	}
	tr.requested(done)
	tr.p.bytes.Add(n)
	return done, nil
}

// received measures the video segment or part whose frames (tr.frames)
// arrived whole at done.
func (tr *hlsTrack) received(done time.Time, part, independent bool) {
	p, r := tr.p, tr.p.r
	if len(tr.frames) == 0 {
		return
	}
	if p.first.IsZero() {
		if !independent {
			return // nothing to show before a keyframe
		}
		p.first = done
		p.t.ttff.add(done.Sub(p.playStart))
		if r.cfg.FirstFrames != nil && tr.c.conn != nil {
			r.firstMu.Lock()
			fmt.Fprintf(r.cfg.FirstFrames, "%s %d %d\n", tr.c.conn.LocalAddr(), p.playStart.UnixNano(), done.UnixNano())
			r.firstMu.Unlock()
		}
	}
	p.gap(done)
	p.last = done
	for _, f := range tr.frames {
		if f <= tr.lastFrame {
			continue // had it already (a segment after its parts)
		}
		tr.lastFrame = f
		if sent, ok := r.pub.sent.sentAt(f); ok && r.inWindow(sent) {
			p.t.windowFrames.Add(1)
			if p.probe {
				p.t.latency.add(done.Sub(sent))
			}
		}
	}
	inWindow := r.inWindow(done)
	last := tr.frames[len(tr.frames)-1]
	if part && inWindow {
		// The server closes a part when the frame after its last arrives;
		// a part read before its sender noted that frame is not late.
		var late time.Duration
		if next, ok := r.pub.sent.sentAt(last + 1); ok {
			late = max(0, done.Sub(next))
		}
		p.t.partLate.add(late)
	}
	start, ok1 := r.pub.sent.sentAt(tr.frames[0])
	end, ok2 := r.pub.sent.sentAt(last)
	if !ok1 || !ok2 {
		return
	}
	tr.pb.arrived(done, start, end.Add(tr.frameDur), tr.offset, r.inWindow, &p.t.stalls)
	if inWindow && tr.pb.started {
		p.t.behind.add(done.Sub(tr.pb.playhead(done)))
	}
}

// playback models a player's media element on the send-time axis: it
// starts playing once the media at its start position is buffered, plays
// in real time, and stalls when the playhead reaches the end of the
// buffered media, resuming as soon as more arrives.
type playback struct {
	startAt time.Time // where playback starts; zero until media arrived
	started bool
	stalled bool
	pos0    time.Time // the playhead at wall0; while stalled, where it stopped
	wall0   time.Time
	end     time.Time // the end of the buffered media
}

// playhead returns the media time played at now.
func (pb *playback) playhead(now time.Time) time.Time {
	if pb.stalled {
		return pb.pos0
	}
	pos := pb.pos0.Add(now.Sub(pb.wall0))
	if pos.After(pb.end) {
		return pb.end
	}
	return pos
}

// arrived adds media [start, end) that arrived at now. The first media
// sets the start position, offset into it. A stall is counted, when the
// buffer ran dry before now, if it began in the window.
func (pb *playback) arrived(now, start, end time.Time, offset time.Duration, inWindow func(time.Time) bool, stalls *atomic.Int64) {
	if pb.startAt.IsZero() {
		pb.startAt = start.Add(offset)
	}
	if pb.started && !pb.stalled {
		if dry := pb.wall0.Add(pb.end.Sub(pb.pos0)); dry.Before(now) {
			pb.stalled, pb.pos0 = true, pb.end
			if inWindow(dry) {
				stalls.Add(1)
			}
		}
	}
	if end.After(pb.end) {
		pb.end = end
	}
	switch {
	case !pb.started && pb.end.After(pb.startAt):
		pb.started, pb.pos0, pb.wall0 = true, pb.startAt, now
	case pb.stalled && pb.end.After(pb.pos0):
		pb.stalled, pb.wall0 = false, now
	}
}
