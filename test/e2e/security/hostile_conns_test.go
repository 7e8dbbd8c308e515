//go:build unix

package security

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestHostileConnections holds connections open without ever publishing or
// playing (idle sockets, slow-drip handshakes, clients that connect and
// then only ping or drip their next command) and checks the handshake
// timeout closes every one, without a log line each; then it fills one
// address's allowance of waiting RTMP and HTTP connections, beside twice
// as many players from the same address.
func TestHostileConnections(t *testing.T) {
	const (
		handshake = 3 * time.Second
		perIP     = 20
		idle      = 2000
	)
	needFiles(t, idle+500)
	e := startHostile(t, "--handshake-timeout", handshake.String(), "--max-connections-per-ip", fmt.Sprint(perIP))
	if lim := fileLimit(t, e.p.Cmd.Process.Pid); lim < idle+500 {
		t.Fatalf("the server may open %d files, want more than %d", lim, idle+500)
	}
	// A connection must be closed within the handshake timeout and some
	// slack for a loaded machine. Its lifetime, measured from when the
	// client's goroutine saw the dial complete, may fall short of the
	// timeout (the server's clock starts at accept), so only a wide
	// lower bound is checked here; the server's handshake timeout count
	// tells why they were closed.
	const slack = 5 * time.Second
	checkClosed := func(t *testing.T, what string, lifetimes []time.Duration, errs []error) {
		t.Helper()
		var longest time.Duration
		bad := 0
		for i, err := range errs {
			if err != nil {
				if bad++; bad <= 5 {
					t.Errorf("%s %d: %v", what, i, err)
				}
				continue
			}
			if lifetimes[i] < handshake/3 {
				if bad++; bad <= 5 {
					t.Errorf("%s %d closed after %v, before the handshake timeout", what, i, lifetimes[i])
				}
			}
			longest = max(longest, lifetimes[i])
		}
		if bad > 0 {
			t.Errorf("%d of %d %s not closed by the handshake timeout", bad, len(errs), what)
		}
		t.Logf("%d %s closed; the longest lived %v", len(errs), what, longest.Round(time.Millisecond))
	}
	// attack runs n clients from block's addresses, each doing its part
	// until end or until the server closes the connection, and returns how
	// long each lived and why it failed, if it did.
	attack := func(t *testing.T, block, n int, part func(c net.Conn, end time.Time) error) ([]time.Duration, []error) {
		t.Helper()
		lifetimes, errs := make([]time.Duration, n), make([]error, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 256) // dials at once
		for i := 0; i < n; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				c, err := dialFrom(loopbackIP(block, i), e.p.RTMPAddr)
				<-sem
				if err != nil {
					errs[i] = err
					return
				}
				defer c.Close()
				start := time.Now()
				end := start.Add(handshake + slack)
				c.SetDeadline(end)
				if err := part(c, end); err != nil {
					errs[i] = err
					return
				}
				errs[i] = closedBy(c, max(time.Until(end), time.Millisecond))
				lifetimes[i] = time.Since(start)
			}()
		}
		wg.Wait()
		return lifetimes, errs
	}
	timeouts0 := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="handshake_timeout"}`)
	logs0 := e.logLines("handshake timeout")

	t.Run(fmt.Sprintf("%d idle sockets", idle), func(t *testing.T) {
		lt, errs := attack(t, 50, idle, func(net.Conn, time.Time) error { return nil })
		checkClosed(t, "idle sockets", lt, errs)
		e.healthy(t)
	})
	t.Run("slow-drip handshakes", func(t *testing.T) {
		// A byte of the handshake every 500 ms: 1537 are due.
		lt, errs := attack(t, 51, 200, func(c net.Conn, end time.Time) error {
			for time.Now().Before(end) {
				if _, err := c.Write([]byte{3}); err != nil {
					return nil // closed: seen by the read next
				}
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
					return nil
				}
			}
			return nil
		})
		checkClosed(t, "slow-drip handshakes", lt, errs)
		e.healthy(t)
	})
	t.Run("connect, then only pings", func(t *testing.T) {
		// Every read is answered within the read timeout, but the session
		// never publishes or plays.
		lt, errs := attack(t, 52, 100, func(c net.Conn, end time.Time) error {
			cl, err := rtmp.NewClient(c)
			if err == nil {
				err = cl.Connect("live", "rtmp://localhost/live")
			}
			if err != nil {
				return fmt.Errorf("connect: %w", err)
			}
			for seq := uint32(0); time.Now().Before(end); seq++ {
				if cl.WriteMedia(rtmp.TypeUserControl, 0, rtmp.AppendUserControl(nil, rtmp.EventPingRequest, seq)) != nil || cl.Flush() != nil {
					return nil
				}
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, err := c.Read(make([]byte, 4096)); err != nil && !isTimeout(err) {
					return nil
				}
			}
			return nil
		})
		checkClosed(t, "connected clients that only ping", lt, errs)
		e.healthy(t)
	})
	t.Run("connect, then drip the publish command", func(t *testing.T) {
		publish, _ := rtmp.AppendCommand(nil, "publish", 0, nil, "drip", "live")
		msg := rtmp.AppendMessage(nil, rtmp.CSIDCommand, rtmp.TypeCommandAMF0, 1, 0, publish, rtmp.DefaultChunkSize)
		lt, errs := attack(t, 53, 100, func(c net.Conn, end time.Time) error {
			cl, err := rtmp.NewClient(c)
			if err == nil {
				err = cl.Connect("live", "rtmp://localhost/live")
			}
			if err != nil {
				return fmt.Errorf("connect: %w", err)
			}
			for _, b := range msg {
				if time.Now().After(end) {
					return nil
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return nil
				}
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if _, err := c.Read(make([]byte, 4096)); err != nil && !isTimeout(err) {
					return nil
				}
			}
			return fmt.Errorf("the whole publish command went through, %d bytes at 2 a second", len(msg))
		})
		checkClosed(t, "clients dripping a command", lt, errs)
		e.healthy(t)
	})
	// Counted, and logged without a line each.
	timeouts := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="handshake_timeout"}`) - timeouts0
	lines := e.logLines("handshake timeout") - logs0
	t.Logf("%.0f handshake timeouts counted, %d log lines", timeouts, lines)
	if want := float64(idle + 200 + 100 + 100); timeouts < want {
		t.Errorf("%.0f handshake timeouts counted, want %.0f", timeouts, want)
	}
	if lines == 0 || lines > 60 {
		t.Errorf("%d log lines for %.0f handshake timeouts, want some, at most one a second", lines, timeouts)
	}

	t.Run("per-IP limit, RTMP", func(t *testing.T) {
		ip := loopbackIP(60, 0)
		// Players do not count: twice the limit of them play from one
		// address.
		var players []*e2eutil.RTMPViewer
		for i := 0; i < 2*perIP; i++ {
			v, err := playRTMPFrom(t, ip, e.p.RTMPAddr, "live/stream")
			if err != nil {
				t.Fatalf("player %d of %d from one address: %v", i+1, 2*perIP, err)
			}
			players = append(players, v)
		}
		// The limit's worth of idle sockets from that address: once they
		// have waited out the grace, the next connection is closed at
		// once, before the handshake.
		for i := 0; i < perIP; i++ {
			c, err := dialFrom(ip, e.p.RTMPAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		testutil.WaitFor(t, 10*time.Second, "a connection from the address to be closed at once", func() bool {
			c0c1 := append([]byte{3}, make([]byte, 1536)...) // a handshake's start
			return refusedAtOnce(ip, e.p.RTMPAddr, c0c1)
		})
		// Another address plays; the players from the address play on.
		e.playOn(t, loopbackIP(60, 1), players)
		if e.logLines("too many waiting connections from one address") == 0 {
			t.Error("refusal not logged")
		}
		if got := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="per_ip"}`); got < 1 {
			t.Errorf("per-IP refusals counted: %v", got)
		}
		e.healthy(t)
	})
	t.Run("per-IP limit, HTTP", func(t *testing.T) {
		ip := loopbackIP(61, 0)
		get := func(ip net.IP) (net.Conn, int, error) {
			c, err := dialFrom(ip, e.httpAddr())
			if err != nil {
				return nil, 0, err
			}
			t.Cleanup(func() { c.Close() })
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
				return c, 0, err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return c, 0, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return c, resp.StatusCode, nil
		}
		// perIP keep-alive connections from one address, then idle: they
		// count once idle for twice the HLS segment duration.
		var conns []net.Conn
		for i := 0; i < perIP; i++ {
			c, code, err := get(ip)
			if code != 200 {
				t.Fatalf("connection %d of %d from one address: %d, %v", i+1, perIP, code, err)
			}
			conns = append(conns, c)
		}
		// Then the next is closed without an answer; another address is
		// served.
		testutil.WaitFor(t, 10*time.Second, "a connection from the address to be closed at once", func() bool {
			return refusedAtOnce(ip, e.httpAddr(), []byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"))
		})
		if _, code, err := get(loopbackIP(61, 1)); code != 200 {
			t.Fatalf("another address: %d, %v", code, err)
		}
		// Closing frees the places.
		for _, c := range conns {
			c.Close()
		}
		testutil.WaitFor(t, 10*time.Second, "the address to be served again", func() bool {
			_, code, _ := get(ip)
			return code == 200
		})
		if got := e.metric(t, `meshcast_connections_refused_total{protocol="http",reason="per_ip"}`); got < 1 {
			t.Errorf("per-IP refusals counted: %v", got)
		}
	})
	e.healthy(t)
	e.backToBaseline(t)
}

// refusedAtOnce reports whether a connection from ip to addr that sends
// hello is closed by the server within half a second, unanswered.
func refusedAtOnce(ip net.IP, addr string, hello []byte) bool {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.Write(hello)
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
