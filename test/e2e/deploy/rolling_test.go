//go:build unix

package deploy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// The rolling upgrade: three nodes behind the shipped HAProxy
// configuration, 300 players, and each node in turn drained with SIGTERM
// and started again on its ports.
const (
	rollGrace   = 8 * time.Second // the nodes' --drain-grace
	rollFLV     = 150             // HTTP-FLV players
	rollHLS     = 150             // HLS players
	rollAllowed = 2 * time.Second // the longest reconnection or stall allowed
	rollStream  = "live/roll"
)

// rollEvent is something a player went through, at a time of the roll.
type rollEvent struct {
	at     time.Time
	kind   string // one of the rollKind constants
	d      time.Duration
	detail string
}

const (
	kindReconnect = "flv reconnect" // an HTTP-FLV player playing again: d from losing the connection
	kindStall     = "hls stall"     // an HLS player's buffer ran dry for d
	kindRefused   = "refused"       // a 5xx, or a connection refused or reset before an answer
	kindBack      = "hls back"      // a playlist or a segment went back in the numbering or in time
	kindSkip      = "hls skip"      // a player found segments gone before it fetched them
	kindMissing   = "hls 404"       // a listed segment answered 404
)

// rollLog collects every player's events.
type rollLog struct {
	mu     sync.Mutex
	events []rollEvent
}

func (l *rollLog) add(kind string, d time.Duration, detail string) {
	l.mu.Lock()
	l.events = append(l.events, rollEvent{time.Now(), kind, d, detail})
	l.mu.Unlock()
}

// between returns the events of kind from start up to end.
func (l *rollLog) between(kind string, start, end time.Time) []rollEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rollEvent
	for _, e := range l.events {
		if e.kind == kind && !e.at.Before(start) && e.at.Before(end) {
			out = append(out, e)
		}
	}
	return out
}

func longest(es []rollEvent) time.Duration {
	var m time.Duration
	for _, e := range es {
		m = max(m, e.d)
	}
	return m
}

// refusal tells whether a player's failed request is one the balancer must
// never let through: a 5xx, or a connection refused or reset before any
// answer.
func refusal(status int, err error) bool {
	return status >= 500 || (status == 0 && err != nil)
}

// playFLVRolling plays url (through the balancer) until ctx ends,
// reconnecting at once whenever the connection ends, as flv.js does, and
// logs how long each reconnection took to bring the next video frame.
func playFLVRolling(ctx context.Context, addr, path string, log *rollLog) {
	var lost time.Time
	for ctx.Err() == nil {
		status, err := flvSession(ctx, addr, path, func() {
			if !lost.IsZero() {
				log.add(kindReconnect, time.Since(lost), "")
				lost = time.Time{}
			}
		})
		if ctx.Err() != nil {
			return
		}
		if lost.IsZero() {
			lost = time.Now()
		}
		if refusal(status, err) {
			log.add(kindRefused, 0, fmt.Sprintf("HTTP-FLV: %d %v", status, err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// flvSession is one HTTP-FLV connection: it returns the answer's status (0
// without one) and what ended it. frame runs at every video frame.
func flvSession(ctx context.Context, addr, path string, frame func()) (int, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: meshcast\r\nUser-Agent: rolling\r\n\r\n", path); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("status %s", resp.Status)
	}
	r := flv.NewReader(resp.Body)
	if _, _, err := r.ReadHeader(); err != nil {
		return resp.StatusCode, err
	}
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, ts, body, err := r.ReadTag()
		if err != nil {
			return resp.StatusCode, err
		}
		if typ != 9 {
			continue
		}
		if p, err := flv.ParseVideo(ts, body); err == nil && !p.SeqHeader {
			frame()
		}
	}
}

// hlsPlayer plays a stream's video playlist as hls.js does: it starts
// three segments from the live end, reloads the playlist every target
// duration (half of it when nothing was new), fetches every new segment in
// order, and plays what it fetched in real time, noting stalls (its buffer
// empty), numbering that goes back, segments missed, and refusals.
type hlsPlayer struct {
	client   *http.Client
	base     string // http://BALANCER/APP/STREAM/
	log      *rollLog
	next     int64 // media sequence number of the next segment to fetch; -1 at first
	init     string
	lastTime int64 // presentation time (video clock) of the latest segment
	// Playback: the media fetched and not played yet, as of at.
	buffered time.Duration
	at       time.Time
	playing  bool
	stalled  time.Time // when the buffer ran dry; zero while it has media
	segments int       // fetched
}

// playHLSRolling runs an hlsPlayer until ctx ends.
func playHLSRolling(ctx context.Context, client *http.Client, base string, log *rollLog) *hlsPlayer {
	p := &hlsPlayer{client: client, base: base, log: log, next: -1}
	for ctx.Err() == nil {
		wait := p.reload(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return p
}

// get fetches a URL relative to the stream's path, logging refusals.
func (p *hlsPlayer) get(ctx context.Context, rel string) ([]byte, int) {
	u, err := url.Parse(p.base)
	if err == nil {
		u, err = u.Parse(rel)
	}
	if err != nil {
		p.log.add(kindRefused, 0, "bad URI "+rel)
		return nil, 0
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	req.Header.Set("User-Agent", "rolling")
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			p.log.add(kindRefused, 0, fmt.Sprintf("HLS %s: %v", rel, err))
		}
		return nil, 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil && ctx.Err() == nil {
		p.log.add(kindRefused, 0, fmt.Sprintf("HLS %s: %d, body: %v", rel, resp.StatusCode, err))
		return nil, 0
	}
	if refusal(resp.StatusCode, nil) {
		p.log.add(kindRefused, 0, fmt.Sprintf("HLS %s: %d", rel, resp.StatusCode))
	}
	return b, resp.StatusCode
}

// play advances the playhead to now.
func (p *hlsPlayer) play() {
	now := time.Now()
	if !p.playing {
		p.at = now
		return
	}
	elapsed := now.Sub(p.at)
	p.at = now
	if p.buffered >= elapsed {
		p.buffered -= elapsed
		return
	}
	if p.stalled.IsZero() {
		p.stalled = now.Add(p.buffered - elapsed) // when the buffer ran dry
	}
	p.buffered = 0
}

// appended adds a fetched segment of d to the buffer.
func (p *hlsPlayer) appended(d time.Duration) {
	p.play()
	if !p.stalled.IsZero() {
		p.log.add(kindStall, time.Since(p.stalled), "")
		p.stalled = time.Time{}
	}
	p.buffered += d
	p.playing = true
	p.segments++
}

type hlsSegment struct {
	uri string
	d   time.Duration
}

// reload loads the playlist and fetches what is new, and returns how long
// to wait before the next reload.
func (p *hlsPlayer) reload(ctx context.Context) time.Duration {
	p.play()
	body, status := p.get(ctx, "video1_stream.m3u8")
	if status != http.StatusOK {
		return 500 * time.Millisecond
	}
	seq, target, initURI := int64(-1), time.Second, ""
	var segs []hlsSegment
	var dur time.Duration
	for line := range strings.SplitSeq(string(body), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.ParseInt(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXT-X-TARGETDURATION:"):
			if s, err := strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-TARGETDURATION:")); err == nil {
				target = time.Duration(s) * time.Second
			}
		case strings.HasPrefix(line, "#EXT-X-MAP:URI=\""):
			initURI, _, _ = strings.Cut(strings.TrimPrefix(line, "#EXT-X-MAP:URI=\""), "\"")
		case strings.HasPrefix(line, "#EXTINF:"):
			v, _, _ := strings.Cut(strings.TrimPrefix(line, "#EXTINF:"), ",")
			f, _ := strconv.ParseFloat(v, 64)
			dur = time.Duration(f * float64(time.Second))
		case line != "" && !strings.HasPrefix(line, "#"):
			segs = append(segs, hlsSegment{line, dur})
		}
	}
	if seq < 0 || len(segs) == 0 {
		p.log.add(kindRefused, 0, "HLS playlist without segments")
		return target / 2
	}
	if initURI != p.init {
		if _, status := p.get(ctx, initURI); status != http.StatusOK {
			return target / 2
		}
		p.init = initURI
	}
	first, last := seq, seq+int64(len(segs))-1
	switch {
	case p.next < 0:
		p.next = max(first, last-2)
	case last < p.next-1:
		p.log.add(kindBack, 0, fmt.Sprintf("playlist ends at %d after segment %d was played", last, p.next-1))
		return target / 2
	case p.next < first:
		p.log.add(kindSkip, time.Duration(first-p.next)*target, fmt.Sprintf("segments %d to %d gone", p.next, first-1))
		p.next = first
	}
	got := false
	for msn := p.next; msn <= last; msn++ {
		seg := segs[msn-first]
		b, status := p.get(ctx, seg.uri)
		if status == http.StatusNotFound {
			p.log.add(kindMissing, 0, seg.uri)
		}
		if status != http.StatusOK {
			break
		}
		if t, ok := startTime(b); ok {
			if p.lastTime != 0 && t <= p.lastTime {
				p.log.add(kindBack, 0, fmt.Sprintf("segment %d starts at %d, the one before at %d", msn, t, p.lastTime))
			}
			p.lastTime = t
		}
		p.appended(seg.d)
		p.next, got = msn+1, true
	}
	if got {
		return target
	}
	return target / 2
}

// startTime is an fMP4 segment's first decode time on its first track.
func startTime(b []byte) (int64, bool) {
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil || len(parts) == 0 || len(parts[0].Tracks) == 0 {
		return 0, false
	}
	return int64(parts[0].Tracks[0].BaseTime), true
}

// rollingPublisher publishes the clip in a loop through the balancer's
// RTMP port with ffmpeg, and starts ffmpeg again whenever it exits (its
// node went away), as an encoder set to reconnect does, until ctx ends.
func rollingPublisher(ctx context.Context, clip, url string, exits *rollLog) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
				"-re", "-stream_loop", "-1", "-i", clip, "-c", "copy", "-f", "flv", url)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				return
			}
			exits.add("publisher exit", 0, fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out))))
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return done
}

// TestRollingUpgrade drains and restarts each of three nodes in turn
// behind the shipped HAProxy configuration while 150 HTTP-FLV and 150 HLS
// players watch one stream through it, its publisher coming back through
// the balancer when its node goes. Every HTTP-FLV player whose connection
// ends plays again within 2 s, no HLS player's buffer runs dry for more
// than 2 s, HLS numbering and media time never go back when the balancer
// moves players to another node, and nothing is refused.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	red := testutil.StartRedis(t, 0)
	flags := func(i int) []string {
		return []string{"--redis", red.URL(), "--cluster-secret", "deploy-tests-cluster-secret",
			"--node-id", fmt.Sprintf("meshcast-%d", i+1), "--advertise-host", "127.0.0.1",
			"--publisher-grace", "2s", "--trusted-proxies", "127.0.0.1/32", "--drain-grace", rollGrace.String()}
	}
	var nodes []*e2eutil.Proc
	for i := range 3 {
		nodes = append(nodes, e2eutil.StartProcess(t, flags(i)...))
	}
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(nodes[0].HTTPURL)) == 3 })
	fp, check := startHAProxy(t, nodes)

	clip := e2eutil.SharedClip(t, "rolling.mp4", "320x180", 30, "64k") // keyframes every 2 s
	ctx, cancel := context.WithCancel(context.Background())
	log := &rollLog{}
	pub := rollingPublisher(ctx, clip, "rtmp://"+fp.rtmpAddr+"/"+rollStream, log)
	defer func() { cancel(); <-pub }()
	testutil.WaitFor(t, 20*time.Second, "the stream live through the balancer", func() bool {
		return e2eutil.FLVStarts(fp.httpURL+"/"+rollStream+".flv") == 200
	})

	var wg sync.WaitGroup
	httpAddr := strings.TrimPrefix(fp.httpURL, "http://")
	for range rollFLV {
		wg.Add(1)
		go func() { defer wg.Done(); playFLVRolling(ctx, httpAddr, "/"+rollStream+".flv", log) }()
	}
	transport := &http.Transport{MaxIdleConnsPerHost: rollHLS, IdleConnTimeout: 5 * time.Second,
		DialContext: (&net.Dialer{Timeout: 3 * time.Second}).DialContext, ResponseHeaderTimeout: 15 * time.Second}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 20 * time.Second}
	players := make(chan *hlsPlayer, rollHLS)
	for i := range rollHLS {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Players arrive over two seconds, as an audience does.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(i) * 2 * time.Second / rollHLS):
			}
			players <- playHLSRolling(ctx, client, fp.httpURL+"/"+rollStream+"/", log)
		}()
	}
	stopPlayers := func() { cancel(); wg.Wait(); close(players) }

	// Everybody playing before the roll begins.
	time.Sleep(10 * time.Second)
	if es := log.between(kindRefused, time.Time{}, time.Now()); len(es) > 0 {
		t.Errorf("%d refusals before the roll, first: %s", len(es), es[0].detail)
	}

	type phase struct {
		node       int
		start, end time.Time
		exited     time.Duration // SIGTERM to exit
		back       time.Duration // SIGTERM to back in the balancer
	}
	var phases []phase
	for i := range nodes {
		ph := phase{node: i, start: time.Now()}
		n := nodes[i]
		n.Cmd.Process.Signal(syscall.SIGTERM)
		if err := n.Exit(t, rollGrace+10*time.Second); err != nil {
			t.Errorf("meshcast-%d exited with %v after SIGTERM, want 0", i+1, err)
		}
		ph.exited = time.Since(ph.start)
		nodes[i] = e2eutil.StartProcessAt(t, n.RTMPPort, n.HTTPPort, flags(i)...)
		testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("meshcast-%d ready", i+1), func() bool {
			code, _ := e2eutil.HTTPGetQuiet(nodes[i].HTTPURL + "/readyz")
			return code == 200
		})
		// HAProxy takes it back after as many good checks as it takes
		// failed ones to take it out (rise and fall are both 2).
		time.Sleep(time.Duration(check.fall)*check.inter + time.Second)
		ph.back = time.Since(ph.start)
		// Players the balancer sends back to the node settle there.
		time.Sleep(5 * time.Second)
		ph.end = time.Now()
		phases = append(phases, ph)
		t.Logf("meshcast-%d: exited %v after SIGTERM, back in HAProxy after %v", i+1, ph.exited.Round(100*time.Millisecond), ph.back.Round(100*time.Millisecond))
	}
	stopPlayers()

	var played []*hlsPlayer
	for p := range players {
		played = append(played, p)
	}
	t.Logf("| node restarted | HTTP-FLV reconnections | longest HTTP-FLV reconnection | HLS stalls | longest HLS stall | HLS numbering back / segments skipped / 404 | refusals | publisher restarts |")
	for _, ph := range phases {
		rec := log.between(kindReconnect, ph.start, ph.end)
		stalls := log.between(kindStall, ph.start, ph.end)
		t.Logf("| meshcast-%d | %d | %v | %d | %v | %d / %d / %d | %d | %d |", ph.node+1,
			len(rec), longest(rec).Round(time.Millisecond), len(stalls), longest(stalls).Round(time.Millisecond),
			len(log.between(kindBack, ph.start, ph.end)), len(log.between(kindSkip, ph.start, ph.end)), len(log.between(kindMissing, ph.start, ph.end)),
			len(log.between(kindRefused, ph.start, ph.end)), len(log.between("publisher exit", ph.start, ph.end)))
	}
	// When, after each SIGTERM, the HLS players stalled or found segments
	// gone, and how long the stalls were.
	for _, ph := range phases {
		for _, kind := range []string{kindStall, kindSkip, kindMissing} {
			es := log.between(kind, ph.start, ph.end)
			if len(es) == 0 {
				continue
			}
			var at []string
			for _, e := range es[:min(8, len(es))] {
				at = append(at, fmt.Sprintf("%v (%v %s)", e.at.Sub(ph.start).Round(10*time.Millisecond), e.d.Round(10*time.Millisecond), e.detail))
			}
			t.Logf("meshcast-%d: %d × %s, the first at: %s", ph.node+1, len(es), kind, strings.Join(at, ", "))
		}
	}
	all := func(kind string) []rollEvent { return log.between(kind, time.Time{}, time.Now().Add(time.Hour)) }
	for _, e := range all(kindReconnect) {
		if e.d > rollAllowed {
			t.Errorf("an HTTP-FLV player played again %v after losing its connection, want within %v", e.d.Round(time.Millisecond), rollAllowed)
		}
	}
	for _, e := range all(kindStall) {
		if e.d > rollAllowed {
			t.Errorf("an HLS player stalled %v, want at most %v", e.d.Round(time.Millisecond), rollAllowed)
		}
	}
	for _, kind := range []string{kindRefused, kindBack, kindSkip} {
		if es := all(kind); len(es) > 0 {
			details := make([]string, 0, 5)
			for _, e := range es[:min(5, len(es))] {
				details = append(details, e.detail)
			}
			t.Errorf("%d × %s, first: %s", len(es), kind, strings.Join(details, "; "))
		}
	}
	if len(all(kindReconnect)) < rollFLV {
		t.Errorf("%d HTTP-FLV reconnections, want every player's at least once (the node serving them restarted)", len(all(kindReconnect)))
	}
	segments := 0
	for _, p := range played {
		segments += p.segments
	}
	if len(played) != rollHLS || segments < rollHLS*10 {
		t.Errorf("%d HLS players fetched %d segments, want %d players with 10 or more each", len(played), segments, rollHLS)
	}
	t.Logf("HLS players fetched %d segments; publisher restarts: %v", segments, slices.Collect(func(yield func(string) bool) {
		for _, e := range all("publisher exit") {
			if !yield(e.detail) {
				return
			}
		}
	}))
}
