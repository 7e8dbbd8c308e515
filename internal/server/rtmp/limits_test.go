package rtmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/testutil"
)

// fakeHub is a stream table of one stream per name, made on publish.
type fakeHub struct {
	mu      sync.Mutex
	streams map[stream.Name]*stream.Stream
}

func (h *fakeHub) Publish(name stream.Name, info stream.PublisherInfo) (*stream.Publisher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams == nil {
		h.streams = make(map[stream.Name]*stream.Stream)
	}
	s := h.streams[name]
	if s == nil {
		s = stream.New(name, stream.Config{})
		h.streams[name] = s
	}
	return s.Attach(info)
}

func (h *fakeHub) NewReader(name stream.Name, proto string) (*stream.Reader, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.streams[name]
	if s == nil {
		return nil, hub.ErrNotFound
	}
	return s.NewReader(proto)
}

func (h *fakeHub) StartSession(hub.Session, func()) (string, func()) { return "id", func() {} }

func (h *fakeHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.streams {
		s.Close()
	}
}

// startServer runs a server on loopback with cfg, logging into the
// returned buffer.
func startServer(t *testing.T, cfg Config) (*Server, *testutil.LockedBuffer) {
	t.Helper()
	logs := &testutil.LockedBuffer{}
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := &fakeHub{}
	s := New(cfg, h)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.close()
		s.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return s, logs
}

// dialFrom connects to s from a loopback address of the test's choosing.
func dialFrom(t *testing.T, s *Server, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin waits up to limit for the server to close c, reading and
// discarding, and returns how long that took.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return time.Since(start)
}

// connected returns a client that has connected to app "live".
func connected(t *testing.T, c net.Conn) *rtmp.Client {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cl, err := rtmp.NewClient(c)
	if err == nil {
		err = cl.Connect("live", "rtmp://x/live")
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
	return cl
}

func TestHandshakeTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	s, logs := startServer(t, Config{HandshakeTimeout: timeout, ReadTimeout: 10 * time.Second})
	limit := timeout + 5*time.Second

	t.Run("idle", func(t *testing.T) {
		c := dialFrom(t, s, "127.0.0.1")
		if d := closedWithin(t, c, limit); d < timeout/2 {
			t.Errorf("closed after %v, before the timeout", d)
		}
	})
	t.Run("dripping the handshake", func(t *testing.T) {
		c := dialFrom(t, s, "127.0.0.1")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 50; i++ {
				if _, err := c.Write([]byte{3}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		closedWithin(t, c, limit)
		<-done
	})
	t.Run("connect, then pings but no publish", func(t *testing.T) {
		c := dialFrom(t, s, "127.0.0.1")
		cl := connected(t, c)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := uint32(0); i < 100; i++ {
				// Each ping is answered: the reads never go idle.
				if cl.WriteMedia(rtmp.TypeUserControl, 0, rtmp.AppendUserControl(nil, rtmp.EventPingRequest, i)) != nil || cl.Flush() != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		closedWithin(t, c, limit)
		<-done
	})
	t.Run("publisher outlives it", func(t *testing.T) {
		c := dialFrom(t, s, "127.0.0.1")
		cl := connected(t, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := cl.Publish("pub"); err != nil {
			t.Fatal(err)
		}
		// Publishing for three times the timeout: the session stays.
		end := time.Now().Add(3 * timeout)
		for ts := uint32(0); time.Now().Before(end); ts += 40 {
			if err := cl.WriteMedia(rtmp.TypeVideo, ts, []byte{0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65}); err != nil {
				t.Fatal(err)
			}
			if err := cl.Flush(); err != nil {
				t.Fatalf("publisher closed: %v", err)
			}
			time.Sleep(40 * time.Millisecond)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1024)); err != nil && !isTimeout(err) {
			t.Fatalf("publisher closed: %v", err)
		}
	})
	if !strings.Contains(logs.String(), "handshake timeout") {
		t.Errorf("no %q in the log", "handshake timeout")
	}
	if got := s.Refusals().HandshakeTimeout; got < 3 {
		t.Errorf("%d handshake timeouts counted, want 3", got)
	}
}

// A publisher that keeps sending outlives many read timeouts, and one that
// falls silent is closed one read timeout later, give or take the slack
// the deadline is moved with.
func TestReadTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s, _ := startServer(t, Config{ReadTimeout: timeout})
	c := dialFrom(t, s, "127.0.0.1")
	cl := connected(t, c)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := cl.Publish("pub"); err != nil {
		t.Fatal(err)
	}
	var silent time.Time // the last write
	for ts, end := uint32(0), time.Now().Add(5*timeout); time.Now().Before(end); ts += 100 {
		time.Sleep(timeout / 3)
		if err := cl.WriteMedia(rtmp.TypeVideo, ts, []byte{0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65}); err != nil {
			t.Fatal(err)
		}
		if err := cl.Flush(); err != nil {
			t.Fatalf("publisher closed while sending: %v", err)
		}
		silent = time.Now()
	}
	closedWithin(t, c, 5*time.Second)
	if d := time.Since(silent); d < timeout-timeout/8 {
		t.Errorf("closed %v after the publisher fell silent, before the read timeout", d)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHandshakeTimeoutLogsDoNotFlood(t *testing.T) {
	s, logs := startServer(t, Config{HandshakeTimeout: 200 * time.Millisecond})
	const n = 100
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialFrom(t, s, fmt.Sprintf("127.0.1.%d", i+1))
	}
	for _, c := range conns {
		closedWithin(t, c, 10*time.Second)
	}
	lines := strings.Count(logs.String(), "handshake timeout")
	if lines == 0 || lines > 5 {
		t.Errorf("%d log lines for %d handshake timeouts within a second or two, want 1 to 5:\n%s", lines, n, logs.String())
	}
	// A line after the first counts what was held back.
	if lines > 1 && !strings.Contains(logs.String(), "suppressed=") {
		t.Errorf("no suppressed count in the log:\n%s", logs.String())
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
	s, logs := startServer(t, Config{MaxConnectionsPerIP: 2})
	a1 := dialFrom(t, s, "127.0.0.2")
	connected(t, a1)
	a2 := dialFrom(t, s, "127.0.0.2")
	connected(t, a2)
	// The third from that address is closed before the handshake.
	a3 := dialFrom(t, s, "127.0.0.2")
	a3.Write(make([]byte, 1537))
	if d := closedWithin(t, a3, 5*time.Second); d > 2*time.Second {
		t.Errorf("third connection closed after %v, want at once", d)
	}
	// Another address connects.
	connected(t, dialFrom(t, s, "127.0.0.3"))
	if s.Refusals().PerIP != 1 {
		t.Errorf("refusals %+v, want one per IP", s.Refusals())
	}
	if !strings.Contains(logs.String(), "too many connections from one address") || !strings.Contains(logs.String(), "127.0.0.2") {
		t.Errorf("refusal not logged with its address:\n%s", logs.String())
	}
	// A closed connection frees its place.
	a1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for s.limits.perIP.Open(netip.MustParseAddr("127.0.0.2")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection is still counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	connected(t, dialFrom(t, s, "127.0.0.2"))
}

// Behind a trusted proxy, connections count under the client's address
// from the PROXY protocol header, not the proxy's.
func TestMaxConnectionsPerIPBehindProxy(t *testing.T) {
	s, _ := startServer(t, Config{MaxConnectionsPerIP: 2, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	via := func(client string) net.Conn {
		c := dialFrom(t, s, "127.0.0.4")
		fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 40000 1935\r\n", client)
		return c
	}
	connected(t, via("192.0.2.1"))
	connected(t, via("192.0.2.1"))
	third := via("192.0.2.1")
	closedWithin(t, third, 5*time.Second)
	// Other clients through the same proxy are not limited by those.
	connected(t, via("192.0.2.2"))
	connected(t, via("192.0.2.3"))
	if got := s.limits.perIP.Open(netip.MustParseAddr("127.0.0.4")); got != 0 {
		t.Errorf("the proxy's own address counts %d connections", got)
	}
}

func TestMaxConnectionsLogsDoNotFlood(t *testing.T) {
	s, logs := startServer(t, Config{MaxConnections: 1})
	connected(t, dialFrom(t, s, "127.0.0.1"))
	for i := 0; i < 50; i++ {
		closedWithin(t, dialFrom(t, s, "127.0.0.1"), 5*time.Second)
	}
	if n := strings.Count(logs.String(), "limit reached"); n == 0 || n > 5 {
		t.Errorf("%d log lines for 50 refusals, want 1 to 5", n)
	}
	if got := s.Refusals().MaxConnections; got != 50 {
		t.Errorf("%d refusals counted, want 50", got)
	}
}
