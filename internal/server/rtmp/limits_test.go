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
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
)

// startServer runs a server on loopback with cfg, over a hub of its own,
// logging into the returned buffer.
func startServer(t *testing.T, cfg Config) (*Server, *testutil.LockedBuffer) {
	t.Helper()
	return startServerHub(t, cfg, hub.Config{})
}

// startServerHub is startServer over a hub configured with hcfg.
func startServerHub(t *testing.T, cfg Config, hcfg hub.Config) (*Server, *testutil.LockedBuffer) {
	t.Helper()
	logs := &testutil.LockedBuffer{}
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	hcfg.Logger = cfg.Logger
	h := hub.New(hcfg)
	s := New(cfg, h)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
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

// waitHeld waits until ip holds n connections under MaxConnectionsPerIP.
func waitHeld(t *testing.T, s *Server, ip string, n int) {
	t.Helper()
	addr := netip.MustParseAddr(ip)
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%s to hold %d connections", ip, n), func() bool { return s.limits.perIP.Open(addr) == n })
}

// Connections that wait to publish or play count against
// MaxConnectionsPerIP once they have waited out the grace; the next is
// closed at once.
func TestMaxConnectionsPerIP(t *testing.T) {
	s, logs := startServer(t, Config{MaxConnectionsPerIP: 2, HandshakeTimeout: 20 * time.Second})
	a1 := dialFrom(t, s, "127.0.0.2")
	connected(t, a1)
	connected(t, dialFrom(t, s, "127.0.0.2"))
	waitHeld(t, s, "127.0.0.2", 2)
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
	if !strings.Contains(logs.String(), "too many waiting connections from one address") || !strings.Contains(logs.String(), "127.0.0.2") {
		t.Errorf("refusal not logged with its address:\n%s", logs.String())
	}
	// A closed connection frees its place.
	a1.Close()
	waitHeld(t, s, "127.0.0.2", 1)
	connected(t, dialFrom(t, s, "127.0.0.2"))
}

// A burst of connections from one address is let in; those still waiting
// after the grace beyond the limit are closed, the rest are held until the
// handshake timeout.
func TestMaxConnectionsPerIPAgesIn(t *testing.T) {
	const burst, max = 8, 3
	s, _ := startServer(t, Config{MaxConnectionsPerIP: max, HandshakeTimeout: 4 * time.Second})
	var conns []net.Conn
	for range burst {
		conns = append(conns, dialFrom(t, s, "127.0.0.6"))
	}
	start := time.Now()
	closed := make(chan time.Duration, burst)
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, c)
			closed <- time.Since(start)
		}()
	}
	grace := 2 * time.Second // half the handshake timeout
	var early, late int
	for range burst {
		switch d := <-closed; {
		case d < grace-500*time.Millisecond:
			t.Errorf("a connection closed after %v, within the grace", d)
		case d < grace+time.Second:
			early++
		default:
			late++
		}
	}
	if early != burst-max || late != max {
		t.Errorf("%d connections closed as they aged in and %d by the handshake timeout, want %d and %d", early, late, burst-max, max)
	}
	if got := s.Refusals(); got.PerIP != burst-max || got.HandshakeTimeout != max {
		t.Errorf("refusals %+v, want %d per IP and %d handshake timeouts", got, burst-max, max)
	}
	waitHeld(t, s, "127.0.0.6", 0)
}

// Players and publishers do not count against MaxConnectionsPerIP; they
// count against the hub's MaxSessionsPerIP.
func TestPlayersPerIP(t *testing.T) {
	const max = 2
	s, logs := startServerHub(t, Config{MaxConnectionsPerIP: max, HandshakeTimeout: 2 * time.Second}, hub.Config{MaxSessionsPerIP: 2 * max})
	pc := dialFrom(t, s, "127.0.0.7")
	pub := connected(t, pc)
	pc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := pub.Publish("cam"); err != nil {
		t.Fatal(err)
	}
	play := func() error {
		c := dialFrom(t, s, "127.0.0.7")
		cl := connected(t, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err := cl.Play("cam")
		c.SetDeadline(time.Time{})
		return err
	}
	// The publisher and three players: twice MaxConnectionsPerIP.
	for i := range 2*max - 1 {
		if err := play(); err != nil {
			t.Fatalf("player %d: %v", i+1, err)
		}
	}
	// The next session from that address is refused with a status.
	err := play()
	if err == nil || !strings.Contains(err.Error(), "too many viewers from this address") {
		t.Fatalf("player past the sessions limit: %v", err)
	}
	if !strings.Contains(logs.String(), "play refused") {
		t.Errorf("refusal not logged:\n%s", logs.String())
	}
	if got := s.limits.perIP.Open(netip.MustParseAddr("127.0.0.7")); got != 0 {
		t.Errorf("%d playing connections counted as waiting", got)
	}
}

// Behind a trusted proxy, connections count under the client's address
// from the PROXY protocol header, not the proxy's.
func TestMaxConnectionsPerIPBehindProxy(t *testing.T) {
	s, _ := startServer(t, Config{MaxConnectionsPerIP: 2, HandshakeTimeout: 20 * time.Second, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	via := func(client string) net.Conn {
		c := dialFrom(t, s, "127.0.0.4")
		fmt.Fprintf(c, "PROXY TCP4 %s 127.0.0.1 40000 1935\r\n", client)
		return c
	}
	connected(t, via("192.0.2.1"))
	connected(t, via("192.0.2.1"))
	waitHeld(t, s, "192.0.2.1", 2)
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
