//go:build unix

package security

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/amf0"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// hostileEnv is a meshcast process under attack, with a healthy ffmpeg
// publisher on live/stream and a healthy RTMP viewer of it alongside, and
// the server's open files and goroutines measured before the attacks.
type hostileEnv struct {
	p       *e2eutil.Proc
	v       *e2eutil.RTMPViewer
	baseFDs int
	baseGRs int
}

// startHostile starts meshcast with flags, the healthy publisher and the
// healthy viewer, and measures the baseline.
func startHostile(t *testing.T, flags ...string) *hostileEnv {
	t.Helper()
	p := e2eutil.StartProcess(t, flags...)
	e2eutil.PublishFFmpegLoop(t, fmt.Sprintf("rtmp://localhost:%d/live/stream", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/stream")
	v := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/stream")
	v.WaitFrames(t, 30, 20*time.Second)
	e := &hostileEnv{p: p, v: v}
	// The median of a few samples: start-up work may still be settling.
	var fds, grs []int
	for i := 0; i < 3; i++ {
		f, g := e.stats(t)
		fds, grs = append(fds, f), append(grs, g)
		time.Sleep(300 * time.Millisecond)
	}
	sort.Ints(fds)
	sort.Ints(grs)
	e.baseFDs, e.baseGRs = fds[1], grs[1]
	t.Logf("baseline: %d open files, %d goroutines", e.baseFDs, e.baseGRs)
	return e
}

// stats returns the server's open file descriptors and goroutines.
func (e *hostileEnv) stats(t *testing.T) (fds, goroutines int) {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.p.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("server's open files: %v", err)
	}
	return len(ents), int(e.metric(t, "go_goroutines"))
}

// metric returns the value of one series of the server's /metrics, or -1
// when it has none.
func (e *hostileEnv) metric(t *testing.T, series string) float64 {
	t.Helper()
	body := scrape(t, e.p.HTTPURL)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return f
		}
	}
	return -1
}

// scrape fetches /metrics over a connection of its own, closed after, so
// the scrape leaves no connection behind on the server.
func scrape(t *testing.T, httpURL string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(httpURL + "/metrics")
	if err != nil {
		t.Fatalf("server unreachable: GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// healthy checks that the server is alive and the healthy viewer is still
// receiving frames.
func (e *hostileEnv) healthy(t *testing.T) {
	t.Helper()
	if code, err := e2eutil.HTTPGetQuiet(e.p.HTTPURL + "/healthz"); code != 200 {
		t.Fatalf("server not healthy: /healthz: %d, %v", code, err)
	}
	select {
	case err := <-e.p.Waited:
		e.p.Waited <- err
		t.Fatalf("server exited: %v", err)
	default:
	}
	before := e.v.Video.Load()
	e.v.WaitFrames(t, 15, 15*time.Second)
	if e.v.Video.Load() <= before {
		t.Fatal("healthy viewer stalled")
	}
	if err := e.v.Err.Load(); err != nil {
		t.Fatalf("healthy viewer failed: %v", err)
	}
}

// playOn checks that a player from the address other plays, and that each
// of viewers receives 5 more video frames, waiting for them all at once.
func (e *hostileEnv) playOn(t *testing.T, other net.IP, viewers []*e2eutil.RTMPViewer) {
	t.Helper()
	v, err := playRTMPFrom(t, other, e.p.RTMPAddr, "live/stream")
	if err != nil {
		t.Fatalf("another address: %v", err)
	}
	v.WaitFrames(t, 10, 15*time.Second)
	start := make([]int64, len(viewers))
	for i, v := range viewers {
		start[i] = v.Video.Load()
	}
	testutil.WaitFor(t, 15*time.Second, "every player to receive 5 more frames", func() bool {
		for i, v := range viewers {
			if v.Video.Load()-start[i] < 5 {
				return false
			}
		}
		return true
	})
}

// backToBaseline waits for the server's open files and goroutines to come
// back to the baseline, give or take a little.
func (e *hostileEnv) backToBaseline(t *testing.T) {
	t.Helper()
	const fdSlack, grSlack = 4, 10
	var fds, grs int
	deadline := time.Now().Add(15 * time.Second)
	for {
		fds, grs = e.stats(t)
		if fds <= e.baseFDs+fdSlack && grs <= e.baseGRs+grSlack {
			t.Logf("back to baseline: %d open files (baseline %d), %d goroutines (baseline %d)", fds, e.baseFDs, grs, e.baseGRs)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("server holds %d open files (baseline %d) and %d goroutines (baseline %d) 15 s after the attacks",
				fds, e.baseFDs, grs, e.baseGRs)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// httpAddr is the server's HTTP address, HOST:PORT.
func (e *hostileEnv) httpAddr() string { return fmt.Sprintf("127.0.0.1:%d", e.p.HTTPPort) }

// logLines counts the server log's lines holding s.
func (e *hostileEnv) logLines(s string) int { return strings.Count(e.p.Stderr.String(), s) }

// needFiles makes sure the test process may open n more files, raising
// its soft limit if need be, or skips the test.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	want := n + 512
	if lim.Cur >= want {
		return
	}
	if lim.Max < want {
		t.Skipf("needs %d open files; the hard limit is %d", want, lim.Max)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("raise the open file limit to %d: %v", lim.Max, err)
	}
}

// fileLimit returns the soft limit on open files of process pid.
func fileLimit(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no open file limit in /proc/%d/limits", pid)
	return 0
}

// loopbackIP returns the i-th address of a block of 127.0.0.0/8 set
// aside for one attack (block 1 to 254), so attackers, the healthy clients
// (127.0.0.1) and the per-address limit do not collide.
func loopbackIP(block, i int) net.IP {
	return net.IPv4(127, byte(block), byte(i/250), byte(i%250+1))
}

// dialFrom connects to addr from the loopback address ip.
func dialFrom(ip net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}
	return d.Dial("tcp", addr)
}

// playRTMPFrom is PlayRTMP from the loopback address ip.
func playRTMPFrom(t *testing.T, ip net.IP, addr, name string) (*e2eutil.RTMPViewer, error) {
	t.Helper()
	v, err := e2eutil.DialRTMPViewerFrom(ip, addr, name)
	if err != nil {
		return nil, err
	}
	t.Cleanup(v.Close)
	return v, nil
}

// closedBy reports how c ended within timeout: nil when the server closed
// it (EOF or reset), or the error that says it is still open.
func closedBy(c net.Conn, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// rawHTTP sends "GET target" exactly as given, over a connection of its
// own (a client library would clean the path), and returns the status and
// up to 1 MiB of the body.
func rawHTTP(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("server unreachable: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, "Location: " + loc + "\n" + string(b)
	}
	return resp.StatusCode, string(b)
}

// Synthetic H.264 in FLV video bodies: enough for meshcast, which parses
// the FLV and AVCC framing, not the pictures.
var avcSeqHeader = []byte{0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 4, 0x68, 0xee, 0x3c, 0x80}

// avcFrame returns a video body of size bytes (at least 10): one NAL unit
// of an IDR slice (key) or a non-IDR slice.
func avcFrame(key bool, size int) []byte {
	b := make([]byte, size)
	b[0], b[1] = 0x27, 1
	nal := byte(0x41)
	if key {
		b[0], nal = 0x17, 0x65
	}
	binary.BigEndian.PutUint32(b[5:], uint32(size-9))
	b[9] = nal
	for i := 10; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

// goPublisher is an RTMP publisher written here rather than with
// rtmp.Client, so a test chooses its chunk size and sees its
// acknowledgements.
type goPublisher struct {
	conn net.Conn
	w    *rtmp.ChunkWriter
	r    *rtmp.ChunkReader
	sid  uint32

	acks    atomic.Int64  // acknowledgements received
	lastAck atomic.Uint32 // sequence number of the latest
	done    chan struct{} // the reader is done
	readErr atomic.Value
}

// publishGo connects to addr from ip (nil: any), sets the outgoing chunk
// size and publishes app/key. It fails with the server's status code when
// the server refuses.
func publishGo(t *testing.T, ip net.IP, addr, app, key string, chunkSize int) (*goPublisher, error) {
	t.Helper()
	conn, err := dialFrom(ip, addr)
	if err != nil {
		return nil, err
	}
	p := &goPublisher{conn: conn, w: rtmp.NewChunkWriter(conn), r: rtmp.NewChunkReaderSize(conn, 64<<10), done: make(chan struct{})}
	if err := p.start(app, key, chunkSize); err != nil {
		conn.Close()
		return nil, err
	}
	go p.read()
	t.Cleanup(p.close)
	return p, nil
}

func (p *goPublisher) start(app, key string, chunkSize int) error {
	p.conn.SetDeadline(time.Now().Add(15 * time.Second))
	defer p.conn.SetDeadline(time.Time{})
	if err := rtmp.ClientHandshake(p.conn); err != nil {
		return err
	}
	if chunkSize != rtmp.DefaultChunkSize {
		if err := p.w.SetChunkSize(chunkSize); err != nil {
			return err
		}
	}
	obj := amf0.Object{{Key: "app", Value: app}, {Key: "type", Value: "nonprivate"}, {Key: "tcUrl", Value: "rtmp://localhost/" + app}}
	if _, err := p.call(0, "connect", 1, obj); err != nil {
		return err
	}
	res, err := p.call(0, "createStream", 2, nil)
	if err != nil {
		return err
	}
	if len(res.Args) > 0 {
		if id, ok := res.Args[0].(float64); ok {
			p.sid = uint32(id)
		}
	}
	if err := p.command(p.sid, "publish", 0, nil, key, "live"); err != nil {
		return err
	}
	for {
		cmd, err := p.readCommand()
		if err != nil {
			return err
		}
		if cmd.Name != "onStatus" {
			continue
		}
		code, level := statusOf(cmd)
		if code == "NetStream.Publish.Start" {
			return nil
		}
		if level == "error" {
			return fmt.Errorf("%s: %w", code, rtmp.ErrRefused)
		}
	}
}

func (p *goPublisher) command(sid uint32, name string, tx float64, obj any, args ...any) error {
	b, err := rtmp.AppendCommand(nil, name, tx, obj, args...)
	if err != nil {
		return err
	}
	if err := p.w.WriteMessage(rtmp.CSIDCommand, rtmp.TypeCommandAMF0, sid, 0, b); err != nil {
		return err
	}
	return p.w.Flush()
}

// call sends a command and waits for its _result.
func (p *goPublisher) call(sid uint32, name string, tx float64, obj any, args ...any) (*rtmp.Command, error) {
	if err := p.command(sid, name, tx, obj, args...); err != nil {
		return nil, err
	}
	for {
		cmd, err := p.readCommand()
		if err != nil {
			return nil, err
		}
		if cmd.TxID != tx {
			continue
		}
		switch cmd.Name {
		case "_result":
			return cmd, nil
		case "_error":
			code, _ := statusOf(cmd)
			return nil, fmt.Errorf("%s: %s: %w", name, code, rtmp.ErrRefused)
		}
	}
}

func (p *goPublisher) readCommand() (*rtmp.Command, error) {
	for {
		m, err := p.r.ReadMessage()
		if err != nil {
			return nil, err
		}
		if m.Type == rtmp.TypeCommandAMF0 {
			return rtmp.ParseCommand(m.Payload)
		}
	}
}

// statusOf returns the code and level of a status reply.
func statusOf(cmd *rtmp.Command) (code, level string) {
	for _, v := range append([]any{cmd.Object}, cmd.Args...) {
		if o, ok := v.(amf0.Object); ok {
			if c := o.String("code"); c != "" {
				return c, o.String("level")
			}
		}
	}
	return "", ""
}

// read takes in what the server sends while publishing, counting
// acknowledgements.
func (p *goPublisher) read() {
	defer close(p.done)
	for {
		m, err := p.r.ReadMessage()
		if err != nil {
			p.readErr.Store(err)
			return
		}
		if m.Type == rtmp.TypeAck && len(m.Payload) >= 4 {
			p.lastAck.Store(binary.BigEndian.Uint32(m.Payload))
			p.acks.Add(1)
		}
	}
}

// write sends one media message.
func (p *goPublisher) write(typeID uint8, ts uint32, body []byte) error {
	csid := rtmp.CSIDVideo
	if typeID == rtmp.TypeAudio {
		csid = rtmp.CSIDAudio
	}
	p.conn.SetWriteDeadline(time.Now().Add(15 * time.Second))
	if err := p.w.WriteMessage(csid, typeID, p.sid, ts, body); err != nil {
		return err
	}
	return p.w.Flush()
}

func (p *goPublisher) close() {
	p.conn.Close()
	<-p.done
}

// tsViewer plays a stream and records its video timestamps, or with skim,
// counts its video messages and bytes without keeping them.
type tsViewer struct {
	conn   net.Conn
	skim   bool
	frames atomic.Int64
	bytes  atomic.Int64
	mu     sync.Mutex
	ts     []uint32
	err    atomic.Value
	done   chan struct{}
}

// watch plays name from addr with a Go RTMP client.
func watch(t *testing.T, addr, name string, skim bool) *tsViewer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	app, key, _ := strings.Cut(name, "/")
	c, err := rtmp.NewClient(conn)
	if err == nil {
		err = c.Connect(app, "rtmp://"+addr+"/"+app)
	}
	if err == nil {
		err = c.Play(key)
	}
	if err != nil {
		conn.Close()
		t.Fatalf("play %s: %v", name, err)
	}
	conn.SetDeadline(time.Time{})
	if skim {
		c.Skim()
	}
	v := &tsViewer{conn: conn, skim: skim, done: make(chan struct{})}
	go v.run(c)
	t.Cleanup(func() { conn.Close(); <-v.done })
	return v
}

func (v *tsViewer) run(c *rtmp.Client) {
	defer close(v.done)
	for {
		v.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := c.ReadMessage()
		if err != nil {
			v.err.Store(err)
			return
		}
		// A video frame (not its decoder configuration): AVC NALU packet.
		if m.Type != rtmp.TypeVideo || len(m.Payload) < 2 || m.Payload[1] != 1 {
			continue
		}
		v.frames.Add(1)
		v.bytes.Add(int64(m.Length))
		if !v.skim {
			v.mu.Lock()
			if len(v.ts) < 1<<16 {
				v.ts = append(v.ts, m.Timestamp)
			}
			v.mu.Unlock()
		}
	}
}

// timestamps returns the video timestamps received so far.
func (v *tsViewer) timestamps() []uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]uint32(nil), v.ts...)
}

// waitFrames waits for the viewer to have received n video frames in all.
func (v *tsViewer) waitFrames(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%d video frames (have %d)", n, v.frames.Load()), func() bool {
		return v.frames.Load() >= n
	})
}

// cpuTime returns the CPU time process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
