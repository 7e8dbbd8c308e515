//go:build unix

// Package e2e runs meshcast end to end against the tools users publish and
// play with: ffmpeg, ffprobe and GStreamer.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/app"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

var (
	mediaDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshcast-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mediaDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// input returns the shared input.mp4, making it on first use.
func input(t *testing.T) string {
	t.Helper()
	return sharedClip(t, "input.mp4", "640x360", 60, "128k")
}

// sharedClips are the test media made once per test run, by file name.
var sharedClips sync.Map // string -> *sharedClipResult

type sharedClipResult struct {
	once sync.Once
	path string
	err  error
}

// sharedClip returns a clip of the tests' media directory, made on first
// use with ffmpeg: secs seconds of lavfi testsrc2 at size, 30 fps, H.264
// (ultrafast, keyframes every 2 s) and a 48 kHz AAC sine at audioBitrate.
func sharedClip(t *testing.T, file, size string, secs int, audioBitrate string) string {
	t.Helper()
	return sharedFile(t, file,
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(secs), "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", audioBitrate)
}

// sharedFile returns file in the tests' media directory, made on first use
// by ffmpeg with args (inputs and encoding options; the output is file).
func sharedFile(t *testing.T, file string, args ...string) string {
	t.Helper()
	testutil.Need(t, "ffmpeg", "ffprobe")
	v, _ := sharedClips.LoadOrStore(file, &sharedClipResult{})
	c := v.(*sharedClipResult)
	c.once.Do(func() {
		c.path = filepath.Join(mediaDir, file)
		args = append(append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...), c.path)
		out, err := exec.Command("ffmpeg", args...).CombinedOutput()
		if err != nil {
			c.err = fmt.Errorf("make %s: %v: %s", file, err, out)
		}
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.path
}

// node is a meshcast node running in the test process on loopback.
type node struct {
	*app.App
	rtmpPort int
	httpURL  string
}

func startNode(t *testing.T, mod func(*config.Config)) *node {
	t.Helper()
	return startNodeWith(t, mod, nil)
}

// startClusterNodes starts in-process nodes named ids that form a cluster
// through one in-memory registry; mod, if set, changes each node's
// configuration further.
func startClusterNodes(t *testing.T, mod func(*config.Config), ids ...string) []*node {
	t.Helper()
	reg := cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: 2 * time.Second})
	t.Cleanup(func() { reg.Close() })
	var nodes []*node
	for _, id := range ids {
		nodes = append(nodes, startNodeWith(t, func(c *config.Config) {
			c.NodeID, c.AdvertiseHost = id, "127.0.0.1"
			c.ClusterSecret = "in-process-cluster-secret"
			if mod != nil {
				mod(c)
			}
		}, reg))
	}
	return nodes
}

// startNodeWith is startNode with a cluster registry shared with other
// in-process nodes (nil: the node's own).
func startNodeWith(t *testing.T, mod func(*config.Config), reg cluster.Registry) *node {
	t.Helper()
	cfg := config.Default()
	cfg.RTMPAddr = "127.0.0.1:0"
	cfg.SRTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	if mod != nil {
		mod(&cfg)
	}
	log := slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var opts []app.Option
	if reg != nil {
		opts = append(opts, app.WithRegistry(reg))
	}
	a, err := app.New(cfg, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &node{App: a, rtmpPort: a.RTMPAddr().(*net.TCPAddr).Port, httpURL: "http://" + a.HTTPAddr().String()}
}

// rtmpURL is the URL users type, with "localhost" as in the docs.
func (n *node) rtmpURL(name string) string {
	return fmt.Sprintf("rtmp://localhost:%d/%s", n.rtmpPort, name)
}

// testWriter sends server logs to the test log, and stops after the test.
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// publishFFmpeg starts the publish command from the README and returns a
// function that stops it.
func publishFFmpeg(t *testing.T, url string) (stop func()) {
	t.Helper()
	in := input(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-i", in, "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2000k", "-g", "60",
		"-c:a", "aac", "-b:a", "128k", "-f", "flv", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}

// waitLive waits until the stream has a publisher and a video track.
func waitLive(t *testing.T, n *node, name string) *stream.Stream {
	t.Helper()
	var s *stream.Stream
	waitFor(t, 30*time.Second, name+" to go live", func() bool {
		s = n.Hub.Get(streamname.Name(name))
		if s == nil {
			return false
		}
		in := s.Info()
		return in.Live && in.Video != nil && in.Audio != nil
	})
	return s
}

// waitLiveHTTP waits until the API reports the stream live with video and audio.
func waitLiveHTTP(t *testing.T, httpURL, name string) {
	t.Helper()
	waitFor(t, 30*time.Second, name+" to go live", func() bool {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(httpURL + "/api/v1/streams/" + name)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var s struct {
			Live  bool            `json:"live"`
			Video json.RawMessage `json:"video"`
			Audio json.RawMessage `json:"audio"`
		}
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&s) == nil && s.Live && s.Video != nil && s.Audio != nil
	})
}

// probe is what ffprobe reports about a file.
type probe struct {
	Codecs    []string  // codec names of all streams
	VideoPTS  []float64 // presentation times of video packets, seconds
	Width     int
	Height    int
	AudioPkts int
}

func ffprobe(t *testing.T, path string) probe {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_streams", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var info struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			CodecType string `json:"codec_type"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	var p probe
	for _, s := range info.Streams {
		p.Codecs = append(p.Codecs, s.CodecName)
		if s.CodecType == "video" {
			p.Width, p.Height = s.Width, s.Height
		}
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe packets %s: %v", path, err)
	}
	for _, line := range strings.Fields(string(out)) {
		v, err := strconv.ParseFloat(strings.TrimSuffix(line, ","), 64)
		if err == nil {
			p.VideoPTS = append(p.VideoPTS, v)
		}
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path).Output()
	if err == nil {
		p.AudioPkts = len(strings.Fields(string(out)))
	}
	return p
}

// span returns max-min of ts.
func span(ts []float64) float64 {
	if len(ts) == 0 {
		return 0
	}
	lo, hi := ts[0], ts[0]
	for _, v := range ts {
		lo, hi = min(lo, v), max(hi, v)
	}
	return hi - lo
}

// rtmpViewer is a Go RTMP player that counts what it receives.
type rtmpViewer struct {
	conn    net.Conn
	video   atomic.Int64
	audio   atomic.Int64
	lastTS  atomic.Int64
	backTS  atomic.Int64 // times a video timestamp went backwards
	ended   atomic.Bool  // the server said the stream ended
	err     atomic.Value
	done    chan struct{}
	stalled atomic.Bool
	resume  chan struct{}
}

// playRTMP connects a Go RTMP player to name on n.
func playRTMP(t *testing.T, addr, name string) *rtmpViewer {
	t.Helper()
	v, err := dialRTMPViewer(addr, name)
	if err != nil {
		t.Fatalf("play %s: %v", name, err)
	}
	t.Cleanup(v.close)
	return v
}

func dialRTMPViewer(addr, name string) (*rtmpViewer, error) {
	return dialRTMPViewerFrom(nil, addr, name)
}

// dialRTMPViewerFrom is dialRTMPViewer from the loopback address ip (nil:
// any).
func dialRTMPViewerFrom(ip net.IP, addr, name string) (*rtmpViewer, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := startPlaying(conn, addr, name)
	if err != nil {
		conn.Close()
		return nil, err
	}
	v := &rtmpViewer{conn: conn, done: make(chan struct{}), resume: make(chan struct{})}
	v.lastTS.Store(-1)
	go v.run(c)
	return v, nil
}

// startPlaying connects an RTMP client on conn to addr and plays name
// (APP/STREAM, perhaps with ?parameters), within 15 s. With fourCCs it
// is an enhanced RTMP client taking those codecs.
func startPlaying(conn net.Conn, addr, name string, fourCCs ...string) (*rtmp.Client, error) {
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	defer conn.SetDeadline(time.Time{})
	app, key, _ := strings.Cut(name, "/")
	c, err := rtmp.NewClient(conn)
	if err == nil {
		c.FourCCs = fourCCs
		err = c.Connect(app, fmt.Sprintf("rtmp://%s/%s", addr, app))
	}
	if err == nil {
		err = c.Play(key)
	}
	return c, err
}

func (v *rtmpViewer) run(c *rtmp.Client) {
	defer close(v.done)
	for {
		if v.stalled.Load() {
			<-v.resume
		}
		v.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		m, err := c.ReadMessage()
		if err != nil {
			v.err.Store(err)
			return
		}
		switch m.Type {
		case rtmp.TypeVideo:
			p, err := flv.ParseVideo(m.Timestamp, m.Payload)
			if err != nil || p.SeqHeader {
				continue
			}
			v.video.Add(1)
			if last := v.lastTS.Load(); int64(m.Timestamp) < last {
				v.backTS.Add(1)
			}
			v.lastTS.Store(int64(m.Timestamp))
		case rtmp.TypeAudio:
			v.audio.Add(1)
		case rtmp.TypeCommandAMF0:
			if cmd, err := rtmp.ParseCommand(m.Payload); err == nil && cmd.Name == "onStatus" {
				if bytes.Contains(m.Payload, []byte("NetStream.Play.UnpublishNotify")) {
					v.ended.Store(true)
				}
			}
		}
	}
}

func (v *rtmpViewer) close() {
	v.conn.Close()
	if v.stalled.CompareAndSwap(true, false) {
		close(v.resume)
	}
	<-v.done
}

// waitFrames waits until the viewer has received at least n more video
// frames than it had when called.
func (v *rtmpViewer) waitFrames(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	start := v.video.Load()
	waitFor(t, timeout, fmt.Sprintf("%d more video frames (have %d)", n, v.video.Load()-start), func() bool {
		return v.video.Load()-start >= n
	})
}

// httpGet fetches url with a timeout, returning status and body.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("GET %s: read: %v", url, err)
	}
	return resp.StatusCode, b
}

// httpNoRedirect is a client that reports redirects instead of following them.
func httpNoRedirect() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// meshcastBinary builds cmd/meshcast once, without the race detector, so
// tests can measure the server as users run it.
func meshcastBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binPath = filepath.Join(mediaDir, "meshcast")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/meshcast/meshcast/cmd/meshcast").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a meshcast server running as its own process.
type proc struct {
	cmd      *exec.Cmd
	rtmpAddr string
	rtmpPort int
	httpPort int
	httpURL  string
	stdout   *testutil.LockedBuffer
	stderr   *testutil.LockedBuffer
	waited   chan error // receives the process's exit
	killed   atomic.Bool
}

// exit waits for the process to end by itself and returns how it exited.
func (p *proc) exit(t *testing.T, timeout time.Duration) error {
	t.Helper()
	p.killed.Store(true) // ended by the test: cleanup has nothing to stop
	select {
	case err := <-p.waited:
		return err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.waited
		t.Fatalf("meshcast still running %v later", timeout)
		return nil
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.killed.Store(true)
	p.cmd.Process.Kill()
	select {
	case <-p.waited:
	case <-time.After(10 * time.Second):
		t.Fatal("meshcast did not die of SIGKILL")
	}
}

// startProcess runs "meshcast serve" on loopback ports with extra flags and
// waits until it accepts connections.
func startProcess(t *testing.T, flags ...string) *proc {
	t.Helper()
	return startProcessAt(t, testutil.FreePort(t), testutil.FreePort(t), flags...)
}

// startProcessAt is startProcess on given loopback ports.
func startProcessAt(t *testing.T, rtmpPort, httpPort int, flags ...string) *proc {
	t.Helper()
	return startBinary(t, meshcastBinary(t), nil, rtmpPort, httpPort, flags...)
}

// startBinary is startProcessAt for the meshcast binary bin, with env added
// to the process's environment.
func startBinary(t *testing.T, bin string, env []string, rtmpPort, httpPort int, flags ...string) *proc {
	t.Helper()
	p := &proc{
		rtmpAddr: fmt.Sprintf("127.0.0.1:%d", rtmpPort),
		rtmpPort: rtmpPort,
		httpPort: httpPort,
		httpURL:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		stdout:   &testutil.LockedBuffer{},
		stderr:   &testutil.LockedBuffer{},
		waited:   make(chan error, 1),
	}
	args := append([]string{"serve", "--rtmp-addr", p.rtmpAddr, "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort), "--srt-addr", "127.0.0.1:0"}, flags...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = append(append(os.Environ(), "MESHCAST_LOG_LEVEL=info"), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.killed.Load() {
			if t.Failed() {
				t.Logf("meshcast log (killed):\n%s", p.stderr.String())
			}
			return
		}
		p.cmd.Process.Signal(os.Interrupt)
		done := p.waited
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("meshcast exited with %v after SIGINT\n%s", err, p.stderr.String())
			}
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
			t.Errorf("meshcast did not exit within 10 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("meshcast log:\n%s", p.stderr.String())
		}
	})
	waitFor(t, 10*time.Second, "meshcast to accept connections", func() bool {
		c, err := net.DialTimeout("tcp", p.rtmpAddr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		code, _ := httpGetQuiet(p.httpURL + "/healthz")
		return code == 200
	})
	return p
}

// rss returns the process's resident set size in bytes.
func (p *proc) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func httpGetQuiet(url string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// tryPublish publishes name to addr with a Go RTMP client whose connection
// starts with header (a PROXY protocol line, or nothing), and returns the
// server's answer: nil, or why it refused.
func tryPublish(t *testing.T, addr, header, name string) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(header)); err != nil {
		return err
	}
	c, err := rtmp.NewClient(conn)
	if err != nil {
		return err
	}
	app, key, _ := strings.Cut(name, "/")
	if err := c.Connect(app, "rtmp://"+addr+"/"+app); err != nil {
		return err
	}
	return c.Publish(key)
}
