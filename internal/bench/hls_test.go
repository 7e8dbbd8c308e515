package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A low-latency media playlist as meshcast serves it (gohlslib's, with
// public names): gap segments first, parts for the last segments, a
// preload hint.
const llPlaylist = `#EXTM3U
#EXT-X-VERSION:10
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.58500,CAN-SKIP-UNTIL=12.00000
#EXT-X-PART-INF:PART-TARGET=0.23400
#EXT-X-MEDIA-SEQUENCE:3
#EXT-X-MAP:URI="video1_ea1a31da_init.mp4"
#EXT-X-GAP
#EXTINF:1.93327,
gap.mp4
#EXTINF:1.93327,
video1_ea1a31da_s4.mp4
#EXT-X-PROGRAM-DATE-TIME:2026-12-07T13:58:44.35Z
#EXT-X-PART:DURATION=0.20000,URI="d4abfc324526_video1_part0.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20000,URI="d4abfc324526_video1_part1.mp4"
#EXT-X-PART:DURATION=0.06644,URI="d4abfc324526_video1_part2.mp4"
#EXTINF:0.46644,
video1_ea1a31da_s5.mp4
#EXT-X-PART:DURATION=0.20010,URI="d4abfc324526_video1_part3.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.20001,URI="d4abfc324526_video1_part4.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="d4abfc324526_video1_part5.mp4"
`

func TestParseLowLatencyPlaylist(t *testing.T) {
	var pl mediaPlaylist
	if !pl.parse([]byte(strings.ReplaceAll(llPlaylist, "\n", "\r\n"))) {
		t.Fatal("not parsed as a media playlist")
	}
	if pl.target != 2 || pl.partTarget != 0.234 || pl.partHoldBack != 0.585 || !pl.canBlock || !pl.canSkip || pl.endList {
		t.Errorf("header: %+v", pl)
	}
	if len(pl.segs) != 4 || pl.first() != 3 || pl.last() != 6 || pl.lastComplete() != 5 {
		t.Fatalf("%d segments %d..%d, last complete %d; want 4, 3..6, 5", len(pl.segs), pl.first(), pl.last(), pl.lastComplete())
	}
	if s := pl.seg(3); !s.gap || !s.complete {
		t.Errorf("segment 3: %+v, want a gap", s)
	}
	s := pl.seg(5)
	if string(s.uri) != "video1_ea1a31da_s5.mp4" || s.dur != 0.46644 || s.nParts != 3 || string(s.mapURI) != "video1_ea1a31da_init.mp4" {
		t.Errorf("segment 5: uri %q dur %v parts %d map %q", s.uri, s.dur, s.nParts, s.mapURI)
	}
	if p := pl.parts[s.part0]; string(p.uri) != "d4abfc324526_video1_part0.mp4" || !p.independent || p.dur != 0.2 {
		t.Errorf("first part of segment 5: %+v", p)
	}
	if s := pl.seg(6); s.complete || s.nParts != 2 || pl.parts[s.part0+1].independent {
		t.Errorf("unfinished segment 6: %+v", s)
	}
	if string(pl.hint) != "d4abfc324526_video1_part5.mp4" || pl.after() != (hlsPos{6, 2}) {
		t.Errorf("hint %q at %v, want part5 at {6 2}", pl.hint, pl.after())
	}
}

// A delta update lists the segments after those it skips, without
// EXT-X-MAP.
func TestParseDeltaUpdate(t *testing.T) {
	var pl mediaPlaylist
	ok := pl.parse([]byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n" +
		"#EXTINF:2.0,\na.mp4\n#EXTINF:2.0,\nb.mp4\n#EXT-X-ENDLIST\n"))
	if !ok || pl.first() != 13 || pl.last() != 14 || pl.seg(13).mapURI != nil || !pl.endList || pl.after() != (hlsPos{15, 0}) {
		t.Errorf("%+v", pl)
	}
}

func TestParseMultivariant(t *testing.T) {
	body := `#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS

#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="other",AUTOSELECT=YES,URI="audio3_stream.m3u8"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio2",AUTOSELECT=YES,DEFAULT=YES,URI="audio2_stream.m3u8"

#EXT-X-STREAM-INF:BANDWIDTH=617173,CODECS="avc1.64001e,mp4a.40.2",RESOLUTION=640x360,AUDIO="audio"
video1_stream.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=317173,CODECS="avc1.64001e,mp4a.40.2",AUDIO="audio"
../x_360p/video1_stream.m3u8
`
	mv, ok := parseMultivariant([]byte(body))
	if !ok || mv.video != "video1_stream.m3u8" || mv.audio != "audio2_stream.m3u8" {
		t.Errorf("got %+v %v", mv, ok)
	}
	if _, ok := parseMultivariant([]byte(llPlaylist)); ok {
		t.Error("a media playlist taken for a multivariant one")
	}
}

func TestAttr(t *testing.T) {
	list := []byte(`BANDWIDTH=1,CODECS="avc1.64001e,mp4a.40.2",URI="x.m3u8",DEFAULT=YES`)
	for name, want := range map[string]string{"BANDWIDTH": "1", "CODECS": "avc1.64001e,mp4a.40.2", "URI": "x.m3u8", "DEFAULT": "YES"} {
		if got := attr(list, name); string(got) != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if attr(list, "AUDIO") != nil {
		t.Error("a missing attribute found")
	}
	for in, want := range map[string]float64{"0.58500": 0.585, "2": 2, " 12.5 ": 12.5, "1e1": 10, "x": 0, "-1": 0} {
		if got := parseFloat([]byte(in)); got != want {
			t.Errorf("parseFloat(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestPlainRef(t *testing.T) {
	for ref, want := range map[string]bool{"a.mp4": true, "a.mp4?t=1": true, "sub/a.mp4": true, "../a.mp4": false, "/live/a.mp4": false,
		"http://h/a.mp4": false, "sub/../a.mp4": false, "": false} {
		if got := plainRef([]byte(ref)); got != want {
			t.Errorf("plainRef(%q) = %v", ref, got)
		}
	}
	tr := &hlsTrack{}
	u, _ := url.Parse("http://h:1/live/x/index.m3u8?token=1")
	tr.setBase(u)
	for ref, want := range map[string]string{"a.mp4": "/live/x/a.mp4", "../y/a.mp4?b=2": "/live/y/a.mp4?b=2", "/z.m3u8": "/z.m3u8"} {
		if _, host, err := tr.target([]byte(ref)); err != nil || host != "h:1" || string(tr.path) != want {
			t.Errorf("target(%q) = %q %q %v, want %q", ref, host, tr.path, err, want)
		}
	}
}

// The HTTP client reads bodies of a known length, chunked ones and ones
// that end with the connection, on one kept-alive connection, and replaces
// a connection the server closed.
func TestHTTPConn(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/chunked":
			w.(http.Flusher).Flush()
			io.WriteString(w, "hel")
			w.(http.Flusher).Flush()
			io.WriteString(w, "lo, chunks")
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		case "/missing":
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var c httpConn
	defer c.close()
	get := func(path string) (int, string) {
		t.Helper()
		if err := c.start(ctx, "http", u.Host, []byte(path)); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		var body []byte
		buf := make([]byte, 2)
		for {
			n, err := c.read(buf)
			body = append(body, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		done, err := c.finish(buf)
		if err != nil || done.Before(c.sent) {
			t.Fatalf("GET %s: done %v sent %v: %v", path, done, c.sent, err)
		}
		return c.status, string(body)
	}
	for _, want := range []struct {
		path, body string
		status     int
	}{{"/length", "hello", 200}, {"/chunked", "hello, chunks", 200}, {"/missing", "404 page not found\n", 404}, {"/length", "hello", 200}} {
		if st, body := get(want.path); st != want.status || body != want.body {
			t.Errorf("GET %s: %d %q, want %d %q", want.path, st, body, want.status, want.body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 4 requests, want 1", n)
	}
	get("/close")
	srv.CloseClientConnections() // nothing open: the server closed it
	if st, body := get("/length"); st != 200 || body != "hello" {
		t.Errorf("after the server closed the connection: %d %q", st, body)
	}
	// A kept-alive connection the server drops is replaced.
	srv.CloseClientConnections()
	if st, body := get("/chunked"); st != 200 || body != "hello, chunks" {
		t.Errorf("after the server dropped the connection: %d %q", st, body)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

// The playback model starts at its start position, plays in real time and
// stalls when the buffer runs dry.
func TestPlayback(t *testing.T) {
	t0 := time.Unix(1000, 0)
	all := func(time.Time) bool { return true }
	var stalls atomic.Int64
	var pb playback
	s := time.Second
	// Media [0, 2s) sent at t0.., arriving at 3s: playback starts 0.5s in.
	pb.arrived(t0.Add(3*s), t0, t0.Add(2*s), s/2, all, &stalls)
	if !pb.started || pb.playhead(t0.Add(3*s)) != t0.Add(s/2) || pb.playhead(t0.Add(4*s)) != t0.Add(3*s/2) {
		t.Fatalf("playhead %v at 4s, want 1.5s", pb.playhead(t0.Add(4*s)).Sub(t0))
	}
	// The next 2s arrive in time: no stall.
	pb.arrived(t0.Add(4*s), t0.Add(2*s), t0.Add(4*s), 0, all, &stalls)
	if stalls.Load() != 0 {
		t.Fatal("stalled with media buffered")
	}
	// The buffer (to 4s) runs dry at 6.5s (played from 0.5s at 3s); media
	// arriving at 9s ends the stall, counted once.
	if got := pb.playhead(t0.Add(8 * s)); got != t0.Add(4*s) {
		t.Errorf("playhead %v in the stall, want 4s", got.Sub(t0))
	}
	pb.arrived(t0.Add(9*s), t0.Add(4*s), t0.Add(6*s), 0, all, &stalls)
	if stalls.Load() != 1 || pb.playhead(t0.Add(10*s)) != t0.Add(5*s) {
		t.Errorf("%d stalls, playhead %v at 10s; want 1, 5s", stalls.Load(), pb.playhead(t0.Add(10*s)).Sub(t0))
	}
}

// A player finds every frame's number in the segments it reads, whatever
// the read boundaries, counts each frame once, and starts 3 target
// durations behind the end of the playlist.
func TestHLSPlayerFrames(t *testing.T) {
	const segs, perSeg = 5, 30
	now := time.Now()
	r := &runner{pub: &publisher{src: &source{tags: []tag{{typ: 9}}, duration: 33}, sent: &sendTable{start: now.Add(-time.Minute)}}}
	r.winStart.Store(now.Add(-time.Minute).UnixNano())
	// Segment i holds frames i*perSeg+1 .. (i+1)*perSeg, each a marked SEI
	// NAL and 1500 bytes of filler: markers fall across 16 KiB reads.
	media := map[string][]byte{}
	for i := range segs {
		var b []byte
		for f := i*perSeg + 1; f <= (i+1)*perSeg; f++ {
			r.pub.sent.put(uint32(f), now.Add(-time.Duration(segs*perSeg-f)*33*time.Millisecond))
			b = appendMarked(b, make([]byte, 1505), uint32(f))
		}
		media[fmt.Sprintf("/v/s%d.mp4", i)] = b
		media[fmt.Sprintf("/a/s%d.mp4", i)] = make([]byte, 3000)
	}
	pl := func(dir string) string {
		s := "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n"
		for i := range segs {
			s += fmt.Sprintf("#EXTINF:1.0,\n%s/s%d.mp4\n", dir, i)
		}
		return s + "#EXT-X-ENDLIST\n"
	}
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		requests.Add(1)
		switch p := req.URL.Path; {
		case p == "/live/index.m3u8":
			io.WriteString(w, "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"a\",DEFAULT=YES,URI=\"audio.m3u8\"\n"+
				"#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\nvideo.m3u8\n")
		case p == "/live/video.m3u8":
			io.WriteString(w, pl("../v"))
		case p == "/live/audio.m3u8":
			io.WriteString(w, pl("/a"))
		case p == "/live/init.mp4":
			io.WriteString(w, "init")
		case media[p] != nil:
			w.Write(media[p])
		default:
			http.NotFound(w, req)
		}
	}))
	defer srv.Close()
	p := &player{r: r, t: &tally{}, probe: true, joinStart: time.Now()}
	u, _ := url.Parse(srv.URL + "/live/index.m3u8")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.playHLS(ctx, u, false); err != errStreamEnded {
		t.Fatalf("player ended with %v, want the end of the playlist", err)
	}
	// It starts 3 s (3 target durations) before the end: at segment 2.
	if got, want := p.t.windowFrames.Load(), int64(3*perSeg); got != want {
		t.Errorf("%d frames counted, want %d", got, want)
	}
	if !p.connected.Load() || p.t.ttff.n.Load() != 1 || p.t.latency.n.Load() != 3*perSeg {
		t.Errorf("connected %v, %d first frames, %d latencies", p.connected.Load(), p.t.ttff.n.Load(), p.t.latency.n.Load())
	}
	// index, 2 playlists, 2 inits, 3+3 segments.
	if got := requests.Load(); got != 11 || p.t.requests.n.Load() != 11 {
		t.Errorf("%d requests served, %d measured; want 11", got, p.t.requests.n.Load())
	}
	if want := int64(2*len("init") + 3*len(media["/v/s2.mp4"]) + 3*3000); p.bytes.Load() != want {
		t.Errorf("%d bytes, want %d", p.bytes.Load(), want)
	}
}
