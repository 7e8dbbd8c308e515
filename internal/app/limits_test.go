package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/testutil"
)

// startApp runs a node on loopback ports with cfg's limits.
func startApp(t *testing.T, mod func(*config.Config)) *App {
	t.Helper()
	cfg := config.Default()
	cfg.RTMPAddr, cfg.HTTPAddr, cfg.WebRTCUDPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.RTSPAddr, cfg.RTSPSAddr, cfg.RTSPUDPRTPAddr, cfg.RTSPUDPRTCPAddr = "127.0.0.1:0", "127.0.0.1:0", "", ""
	mod(&cfg)
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func dialHTTP(t *testing.T, a *App, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", a.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// healthz sends GET /healthz on c and reads the answer's status, keeping
// the connection open.
func healthz(c net.Conn) (int, error) {
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitHTTPHeld waits until ip holds n waiting HTTP connections.
func waitHTTPHeld(t *testing.T, a *App, ip string, n int) {
	t.Helper()
	addr := netip.MustParseAddr(ip)
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%s to hold %d waiting connections", ip, n), func() bool { return a.httpPerIP.Open(addr) == n })
}

// closedByServer reports whether the server closed c within limit.
func closedByServer(c net.Conn, limit time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(limit))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// HTTP keep-alive connections count against --max-connections-per-ip once
// idle for twice the HLS segment duration; polling ones never do. Past the
// limit, idle ones are closed as they age in and new ones at once.
func TestHTTPMaxConnectionsPerIP(t *testing.T) {
	const max, conns = 2, 5
	a := startApp(t, func(c *config.Config) {
		c.MaxConnectionsPerIP = max
		c.HLSSegmentDuration = 250 * time.Millisecond // idle for 500ms: counted
	})
	var cs []net.Conn
	for range conns {
		cs = append(cs, dialHTTP(t, a, "127.0.0.5"))
	}
	// Players polling every 200ms, more than the limit of them, all served.
	for range 8 {
		for i, c := range cs {
			if code, err := healthz(c); code != 200 {
				t.Fatalf("polling connection %d: %d, %v", i, code, err)
			}
		}
		if n := a.httpPerIP.Open(netip.MustParseAddr("127.0.0.5")); n != 0 {
			t.Fatalf("%d polling connections counted as waiting", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Idle, they age in: the limit's worth stays open, the rest is closed.
	waitHTTPHeld(t, a, "127.0.0.5", max)
	closed := 0
	for _, c := range cs {
		if closedByServer(c, 2*time.Second) {
			closed++
		}
	}
	if closed != conns-max {
		t.Errorf("%d idle connections closed, want %d", closed, conns-max)
	}
	// A new connection from the address is closed without an answer.
	if code, err := healthz(dialHTTP(t, a, "127.0.0.5")); err == nil {
		t.Fatalf("connection past the limit answered %d", code)
	}
	if code, err := healthz(dialHTTP(t, a, "127.0.0.6")); code != 200 {
		t.Fatalf("another address: %d, %v", code, err)
	}
	if got := a.httpPerIP.Refused(); got != conns-max+1 {
		t.Errorf("%d refusals counted, want %d", got, conns-max+1)
	}
}

// A connection that has not finished its request headers counts once it
// has waited half the handshake timeout; a trusted proxy's never do.
func TestHTTPUnfinishedHeadersPerIP(t *testing.T) {
	a := startApp(t, func(c *config.Config) {
		c.MaxConnectionsPerIP = 1
		c.HandshakeTimeout = 2 * time.Second // counted after 1s
		c.TrustedProxies = []string{"127.0.0.9/32"}
	})
	slow := dialHTTP(t, a, "127.0.0.7")
	io.WriteString(slow, "GET /healthz HTTP/1.1\r\n")
	waitHTTPHeld(t, a, "127.0.0.7", 1)
	if code, err := healthz(dialHTTP(t, a, "127.0.0.7")); err == nil {
		t.Fatalf("connection past the limit answered %d", code)
	}
	// Finishing the headers frees the place.
	io.WriteString(slow, "Host: x\r\n\r\n")
	waitHTTPHeld(t, a, "127.0.0.7", 0)
	// A trusted proxy's idle connections are not limited.
	for range 3 {
		io.WriteString(dialHTTP(t, a, "127.0.0.9"), "GET /healthz HTTP/1.1\r\n")
	}
	time.Sleep(1500 * time.Millisecond)
	if code, err := healthz(dialHTTP(t, a, "127.0.0.9")); code != 200 {
		t.Fatalf("trusted proxy: %d, %v", code, err)
	}
}

func TestHTTPHeaderTimeout(t *testing.T) {
	a := startApp(t, func(c *config.Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	c := dialHTTP(t, a, "127.0.0.1")
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // never finished
	start := time.Now()
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a request whose headers never end is still open after 10 s")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
	// The server stays reachable, and its refusals are in /metrics.
	if code, err := healthz(dialHTTP(t, a, "127.0.0.1")); code != 200 {
		t.Fatalf("healthz: %d, %v", code, err)
	}
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		`meshcast_connections_refused_total{protocol="http",reason="per_ip"} 0`,
		`meshcast_connections_refused_total{protocol="rtmp",reason="handshake_timeout"} 0`,
		`meshcast_connections_refused_total{protocol="rtmp",reason="viewers_per_ip"} 0`,
		`meshcast_connections_refused_total{protocol="webrtc",reason="viewers_per_ip"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// Behind a trusted proxy, viewers count against --max-viewers-per-ip under
// the client's address from X-Forwarded-For, not the proxy's.
func TestViewersPerIPBehindProxy(t *testing.T) {
	a := startApp(t, func(c *config.Config) {
		c.MaxViewersPerIP = 1
		c.TrustedProxies = []string{"127.0.0.0/8"}
	})
	pub, err := a.Hub.Publish("live/x", stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	play := func(client string) int {
		t.Helper()
		c := dialHTTP(t, a, "127.0.0.1")
		io.WriteString(c, "GET /live/x.flv HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: "+client+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if code := play("198.51.100.1"); code != 200 {
		t.Fatalf("first viewer of a client: %d", code)
	}
	if code := play("198.51.100.1"); code != http.StatusTooManyRequests {
		t.Fatalf("second viewer of the client: %d, want 429", code)
	}
	if code := play("198.51.100.2"); code != 200 {
		t.Fatalf("another client through the same proxy: %d", code)
	}
	if got := a.Hub.SessionRefusals()["flv"]; got != 1 {
		t.Errorf("%d refusals counted, want 1", got)
	}
}
