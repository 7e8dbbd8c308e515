package hls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

var _ Hub = (*testutil.Streams)(nil)

// fixture is an HLS server on a real HTTP listener with one live stream,
// live/test, published from an FLV file made by ffmpeg.
type fixture struct {
	t      *testing.T
	srv    *Server
	http   *httptest.Server
	client *http.Client
	st     *stream.Stream
	cancel context.CancelFunc
	pubErr chan error
}

func newFixture(t *testing.T, cfg Config, flvs ...string) *fixture {
	t.Helper()
	name, err := streamname.New("live", "test")
	if err != nil {
		t.Fatal(err)
	}
	st := stream.New(name, stream.Config{})
	hub := &testutil.Streams{}
	hub.Put(st)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := New(cfg, hub)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
		if len(parts) != 3 {
			http.NotFound(w, r)
			return
		}
		name, err := streamname.New(parts[0], parts[1])
		if err != nil {
			http.NotFound(w, r)
			return
		}
		srv.ServeStream(w, r, name, parts[2])
	}))
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{t: t, srv: srv, http: hs, client: hs.Client(), st: st, cancel: cancel, pubErr: make(chan error, 1)}
	if len(flvs) > 0 {
		go func() { f.pubErr <- publish(ctx, st, flvs) }()
	} else {
		f.pubErr <- nil
	}
	return f
}

// close stops publishing, the stream, and then the HLS and HTTP servers.
func (f *fixture) close() {
	f.t.Helper()
	f.cancel()
	if err := <-f.pubErr; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, stream.ErrClosed) {
		f.t.Errorf("publish: %v", err)
	}
	f.st.Close()
	f.srv.Close()
	f.http.Close()
	f.client.CloseIdleConnections()
}

func (f *fixture) url(file string) string { return f.http.URL + "/live/test/" + file }

// get fetches file and returns the status, headers and body.
func (f *fixture) get(file string) (int, http.Header, string) {
	f.t.Helper()
	resp, err := f.client.Get(f.url(file))
	if err != nil {
		f.t.Fatalf("GET %s: %v", file, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("GET %s: read body: %v", file, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func (f *fixture) muxer() *muxer {
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	return f.srv.muxers[f.st.Name()]
}

func (f *fixture) muxerCount() int {
	f.srv.mu.Lock()
	defer f.srv.mu.Unlock()
	return len(f.srv.muxers)
}

// eventually polls cond every 50ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// encodeFLV makes a 3-second FLV test file with libx264 (B-frames, a
// keyframe every second) and AAC, per the given input and codec options.
func encodeFLV(t *testing.T, size string, video, audio bool) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "in.flv")
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin"}
	if video {
		args = append(args, "-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30")
	}
	if audio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100")
	}
	args = append(args, "-t", "3")
	if video {
		args = append(args, "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p")
	}
	if audio {
		args = append(args, "-c:a", "aac", "-b:a", "64k")
	}
	args = append(args, "-f", "flv", out)
	if b, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return out
}

// readFLV returns every packet of an FLV file.
func readFLV(path string) ([]media.Packet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := flv.NewReader(f)
	if _, _, err := r.ReadHeader(); err != nil {
		return nil, err
	}
	var pkts []media.Packet
	for {
		p, err := r.ReadPacket()
		if err == io.EOF {
			return pkts, nil
		}
		if err != nil {
			return nil, err
		}
		pkts = append(pkts, p)
	}
}

// publish plays the FLV files into st in real time, one publisher session
// each: every file but the last plays twice, the last loops until ctx ends.
func publish(ctx context.Context, st *stream.Stream, files []string) error {
	start := time.Now()
	var clock int64 // stream time (ms) at which the next file starts
	for i, file := range files {
		pkts, err := readFLV(file)
		if err != nil {
			return err
		}
		pub, err := st.Attach(stream.PublisherInfo{Protocol: "test"})
		if err != nil {
			return err
		}
		rounds := 2
		if i == len(files)-1 {
			rounds = 0
		}
		clock, err = play(ctx, pub, pkts, start, clock, rounds)
		pub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// play writes pkts paced so that stream time t is sent at start+t, and
// returns the stream time after the last packet. It plays the frames
// rounds times, or until ctx ends when rounds is 0.
func play(ctx context.Context, pub *stream.Publisher, pkts []media.Packet, start time.Time, clock int64, rounds int) (int64, error) {
	var span int64
	for _, p := range pkts {
		span = max(span, p.DTS+34) // one frame past the last one
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for round := 0; ; round++ {
		for _, p := range pkts {
			if round > 0 && (p.SeqHeader || p.Kind == media.KindData) {
				continue
			}
			cp := p // the stream takes ownership and rebases DTS in place
			cp.DTS += clock
			timer.Reset(time.Until(start.Add(time.Duration(cp.DTS) * time.Millisecond)))
			select {
			case <-ctx.Done():
				return clock, ctx.Err()
			case <-timer.C:
			}
			if err := pub.WritePacket(&cp); err != nil {
				return clock, err
			}
		}
		clock += span
		if round+1 == rounds {
			return clock, nil
		}
	}
}

// probeStreams lists a file's streams as ffprobe sees them: the codec name,
// and for video the frame count ("h264:60,aac").
func probeStreams(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,nb_frames",
		"-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	var streams []string
	for _, line := range strings.Fields(string(out)) {
		f := strings.Split(line, ",")
		if len(f) != 3 {
			t.Fatalf("ffprobe line %q", line)
		}
		if f[1] == "video" {
			streams = append(streams, f[0]+":"+f[2])
		} else {
			streams = append(streams, f[0])
		}
	}
	return strings.Join(streams, ",")
}

func TestServeLive(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	f := newFixture(t, Config{}, encodeFLV(t, "320x240", true, true))
	defer f.close()

	code, h, body := f.get("index.m3u8")
	if code != http.StatusOK || !strings.HasPrefix(body, "#EXTM3U") {
		t.Fatalf("index.m3u8: %d %q", code, body)
	}
	if got := h.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("index.m3u8 Cache-Control = %q, want no-cache", got)
	}
	for _, want := range []string{"avc1.", "mp4a.40.2", "RESOLUTION=320x240"} {
		if !strings.Contains(body, want) {
			t.Errorf("index.m3u8 lacks %q:\n%s", want, body)
		}
	}

	media := regexp.MustCompile(`(?m)^\S+_stream\.m3u8$`).FindString(body)
	code, h, body = f.get(media)
	if code != http.StatusOK || !strings.Contains(body, "#EXTINF") || h.Get("Cache-Control") != "no-cache" {
		t.Fatalf("%s: %d %v %q", media, code, h, body)
	}
	segment := regexp.MustCompile(`(?m)^video1_[0-9a-f]{8}_s\d+\.mp4$`).FindString(body)
	if code, h, body = f.get(segment); code != http.StatusOK || len(body) == 0 || h.Get("Content-Type") != "video/mp4" {
		t.Fatalf("%s: %d %v, %d bytes", segment, code, h, len(body))
	}

	out := filepath.Join(t.TempDir(), "out.mp4")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-i", f.url("index.m3u8"), "-c", "copy", "-frames:v", "60", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg reading HLS: %v\n%s", err, b)
	}
	if got := probeStreams(t, out); got != "h264:60,aac" && got != "aac,h264:60" {
		t.Errorf("ffprobe of the recording: streams %q, want h264 with 60 frames and aac", got)
	}
	if b, err := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-i", out, "-f", "null", "-").CombinedOutput(); err != nil || len(b) > 0 {
		t.Errorf("decoding the recording: %v\n%s", err, b)
	}
	if n := f.muxerCount(); n != 1 {
		t.Errorf("%d muxers for one stream", n)
	}

	for _, tc := range []struct{ file, why string }{
		{"nope.txt", "unknown name"},
		{"other.m3u8", "unknown playlist"},
		{"0123456789ab_video1_seg99999.mp4", "segment that does not exist"},
		{"0123456789ab_video1_part99999.mp4", "part that does not exist"},
		{"video1_0123abcd_s99999.mp4", "segment of another configuration"},
		{"..%2Findex.m3u8", "path trick"},
	} {
		if code, _, _ := f.get(tc.file); code != http.StatusNotFound {
			t.Errorf("%s (%s): status %d, want 404", tc.file, tc.why, code)
		}
	}
	resp, err := f.client.Get(f.http.URL + "/live/nobody/index.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown stream: status %d, want 404", resp.StatusCode)
	}

	// The stream ends: its muxer goes away and so does the playlist.
	f.cancel()
	f.st.Close()
	eventually(t, 5*time.Second, "the muxer to close", func() bool { return f.muxerCount() == 0 })
	if code, _, _ := f.get("index.m3u8"); code != http.StatusNotFound {
		t.Errorf("index.m3u8 after the stream ended: status %d, want 404", code)
	}
	if code, _, _ := f.get(segment); code != http.StatusNotFound {
		t.Errorf("segment after the stream ended: status %d, want 404", code)
	}
	if n := f.muxerCount(); n != 0 {
		t.Errorf("%d muxers after the stream ended", n)
	}
}

func TestTrackSelection(t *testing.T) {
	needTools(t)
	for _, tc := range []struct {
		name         string
		video, audio bool
		want, absent string
	}{
		{"video only", true, false, "avc1.", "mp4a"},
		{"audio only", false, true, "mp4a.40.2", "avc1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			f := newFixture(t, Config{}, encodeFLV(t, "320x240", tc.video, tc.audio))
			defer f.close()
			code, _, body := f.get("index.m3u8")
			if code != http.StatusOK || !strings.Contains(body, tc.want) || strings.Contains(body, tc.absent) {
				t.Fatalf("index.m3u8: %d, want %q and no %q:\n%s", code, tc.want, tc.absent, body)
			}
			media := regexp.MustCompile(`(?m)^\S+_stream\.m3u8$`).FindString(body)
			if code, _, body := f.get(media); code != http.StatusOK || !strings.Contains(body, "#EXTINF") {
				t.Fatalf("%s: %d %q", media, code, body)
			}
		})
	}
}

func TestConfigurationChangeRestartsMuxer(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	small, large := encodeFLV(t, "320x240", true, true), encodeFLV(t, "640x360", true, true)
	f := newFixture(t, Config{}, small, large)
	defer f.close()

	code, _, body := f.get("index.m3u8")
	if code != http.StatusOK || !strings.Contains(body, "RESOLUTION=320x240") {
		t.Fatalf("index.m3u8 before the change: %d\n%s", code, body)
	}
	// The publisher reconnects with a larger picture after 6s.
	eventually(t, 20*time.Second, "a playlist with the new resolution", func() bool {
		code, _, body := f.get("index.m3u8")
		return code == http.StatusOK && strings.Contains(body, "RESOLUTION=640x360")
	})
	if n := f.muxerCount(); n != 1 {
		t.Errorf("%d muxers for one stream", n)
	}
}

func TestIdleMuxerCloses(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	f := newFixture(t, Config{IdleTimeout: 300 * time.Millisecond}, encodeFLV(t, "320x240", true, true))
	defer f.close()

	if code, _, _ := f.get("index.m3u8"); code != http.StatusOK {
		t.Fatalf("index.m3u8: status %d", code)
	}
	eventually(t, 5*time.Second, "the idle muxer to close", func() bool {
		return f.muxerCount() == 0 && f.st.Stats().ReaderCount["hls"] == 0
	})
	// The stream is still live, so a new request starts a new muxer.
	if code, _, _ := f.get("index.m3u8"); code != http.StatusOK {
		t.Fatalf("index.m3u8 after idling: status %d", code)
	}
}

func TestConcurrentFirstRequestsShareOneMuxer(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	f := newFixture(t, Config{}, encodeFLV(t, "320x240", true, true))
	defer f.close()

	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Go(func() {
			resp, err := f.client.Get(f.url("index.m3u8"))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d: status %d", i, c)
		}
	}
	if n := f.st.Stats().ReaderCount["hls"]; n != 1 {
		t.Errorf("%d HLS readers on the stream, want 1", n)
	}
}

// A stream that never gets enough media for a playlist: requests time out
// with 503, and Close still ends the session waiting for content.
func TestPlaylistTimeout(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	pkts, err := readFLV(encodeFLV(t, "320x240", true, true))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{RequestTimeout: 300 * time.Millisecond})
	defer f.close()

	// Before any media the muxer waits for the tracks.
	start := time.Now()
	if code, h, _ := f.get("index.m3u8"); code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("index.m3u8 of a silent stream: status %d, headers %v; want 503 with Retry-After", code, h)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("request took %v", d)
	}

	// Configurations and one keyframe start gohlslib, which then waits for
	// segments that never come.
	pub, err := f.st.Attach(stream.PublisherInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, p := range pkts {
		cp := p
		if err := pub.WritePacket(&cp); err != nil {
			t.Fatal(err)
		}
		if cp.Keyframe {
			break
		}
	}
	eventually(t, 5*time.Second, "the gohlslib muxer to start", func() bool {
		m := f.muxer()
		return m != nil && m.current() != nil
	})
	if code, _, _ := f.get("index.m3u8"); code != http.StatusServiceUnavailable {
		t.Fatalf("index.m3u8 without segments: status %d, want 503", code)
	}
	// A request that gave up leaves nothing waiting behind it.
	if m := f.muxer(); m == nil || m.waiting.Load() != 0 {
		t.Fatal("a request that timed out is still counted as waiting")
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		file string
		want fileKind
	}{
		{"index.m3u8", kindPlaylist},
		{"video1_stream.m3u8", kindPlaylist},
		{"audio2_stream.m3u8", kindPlaylist},
		{"0a1b2c3d4e5f_video1_init.mp4", kindMedia},
		{"0a1b2c3d4e5f_video1_seg12.mp4", kindMedia},
		{"0a1b2c3d4e5f_main_seg3.ts", kindMedia},
		{"0a1b2c3d4e5f_video1_part40.mp4", kindPart},
		{"video1_0a1b2c3d_init.mp4", kindMedia},
		{"audio2_0a1b2c3d_s1234.mp4", kindMedia},
		{"", kindUnknown},
		{"playlist.m3u8", kindUnknown},
		{".hidden.mp4", kindUnknown},
		{"a/b.mp4", kindUnknown},
		{"index.m3u8?x", kindUnknown},
		{"favicon.ico", kindUnknown},
		{strings.Repeat("a", 200) + ".mp4", kindUnknown},
	} {
		if got := classify(tc.file); got != tc.want {
			t.Errorf("classify(%q) = %d, want %d", tc.file, got, tc.want)
		}
	}
}

func TestToClock(t *testing.T) {
	for _, tc := range []struct {
		ms, rate, want int64
	}{
		{0, 90000, 0},
		{1, 90000, 90},
		{1001, 90000, 90090},
		{-40, 90000, -3600},
		{23, 44100, 1014},
		{1000, 44100, 44100},
		{1 << 50, 90000, (1 << 50) * 90}, // ms*rate alone would overflow
	} {
		if got := toClock(tc.ms, tc.rate); got != tc.want {
			t.Errorf("toClock(%d, %d) = %d, want %d", tc.ms, tc.rate, got, tc.want)
		}
	}
}

func TestAudioSmoothing(t *testing.T) {
	a := &audioTrack{rate: 44100, frameSamples: 1024}
	// FLV rounds 1024-sample frames at 44.1 kHz to 0, 23, 46, 70, 93 ms.
	var got []int64
	for _, ms := range []int64{0, 23, 46, 70, 93, 500} {
		got = append(got, a.smooth(toClock(ms, 44100)))
	}
	want := []int64{0, 1024, 2048, 3072, 4096, toClock(500, 44100)}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("smoothed timestamps %v, want %v", got, want)
		}
	}
}

// TestSegmentInProgress: a segment this node is still making, which
// another node muxing the same stream may list already, is answered once
// it is complete, not with a 404; a segment further ahead is not waited
// for.
func TestSegmentInProgress(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	f := newFixture(t, Config{}, encodeFLV(t, "320x240", true, true))
	defer f.close()

	_, _, index := f.get("index.m3u8")
	media := regexp.MustCompile(`(?m)^\S+_stream\.m3u8$`).FindString(index)
	code, _, body := f.get(media)
	segs := regexp.MustCompile(`(?m)^(video1_[0-9a-f]{8}_s)(\d+)\.mp4$`).FindAllStringSubmatch(body, -1)
	if code != http.StatusOK || len(segs) == 0 {
		t.Fatalf("%s: %d %q", media, code, body)
	}
	last := segs[len(segs)-1]
	n, _ := strconv.Atoi(last[2])
	next := fmt.Sprintf("%s%d.mp4", last[1], n+1)

	start := time.Now()
	code, h, seg := f.get(next)
	if code != http.StatusOK || len(seg) == 0 || h.Get("Content-Type") != "video/mp4" {
		t.Fatalf("%s, the segment in progress: %d %v, %d bytes; want it once complete", next, code, h, len(seg))
	}
	t.Logf("%s answered after %v", next, time.Since(start).Round(time.Millisecond))
	if _, _, body = f.get(media); !strings.Contains(body, next) {
		t.Errorf("the playlist does not list %s, which was answered:\n%s", next, body)
	}

	far := fmt.Sprintf("%s%d.mp4", last[1], n+4)
	start = time.Now()
	if code, _, _ := f.get(far); code != http.StatusNotFound {
		t.Errorf("%s, three segments ahead: %d, want 404", far, code)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("%s waited %v", far, d)
	}

	// The stream stops: its segment in progress is not waited for past
	// half a target duration late.
	f.cancel()
	_, _, body = f.get(media)
	segs = regexp.MustCompile(`(?m)^(video1_[0-9a-f]{8}_s)(\d+)\.mp4$`).FindAllStringSubmatch(body, -1)
	n, _ = strconv.Atoi(segs[len(segs)-1][2])
	stalled := fmt.Sprintf("%s%d.mp4", last[1], n+1)
	target := f.muxer().current().current().target
	start = time.Now()
	if code, _, _ := f.get(stalled); code != http.StatusNotFound {
		t.Errorf("%s of a stream that stopped: %d, want 404", stalled, code)
	}
	t.Logf("%s of a stream that stopped: 404 after %v", stalled, time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > target+target/2+time.Second {
		t.Errorf("%s of a stream that stopped waited %v (target duration %v)", stalled, d, target)
	}
}
