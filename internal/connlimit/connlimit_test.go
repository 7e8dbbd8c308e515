package connlimit

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPerIP(t *testing.T) {
	p := NewPerIP(2)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if !p.Acquire(a) || !p.Acquire(a) {
		t.Fatal("refused within the limit")
	}
	if p.Acquire(a) {
		t.Fatal("third connection from one address accepted")
	}
	if !p.Acquire(b) {
		t.Fatal("another address refused")
	}
	p.Release(a)
	if !p.Acquire(a) {
		t.Fatal("refused after a release")
	}
	if p.Refused() != 1 || p.Open(a) != 2 || p.Open(b) != 1 {
		t.Fatalf("refused %d, open %d and %d", p.Refused(), p.Open(a), p.Open(b))
	}
	p.Release(a)
	p.Release(a)
	p.Release(b)
	if len(p.open) != 0 {
		t.Fatalf("counts left behind: %v", p.open)
	}
	// No limit, or no address: everything goes, nothing is counted.
	for _, q := range []*PerIP{nil, NewPerIP(0)} {
		for range 10 {
			if !q.Acquire(a) {
				t.Fatal("refused without a limit")
			}
		}
		q.Release(a)
	}
	if !p.Acquire(netip.Addr{}) || p.Open(netip.Addr{}) != 0 {
		t.Fatal("an unknown address was limited")
	}
}

func TestAddrOf(t *testing.T) {
	for _, tc := range []struct {
		in   net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.9"), Port: 1}, "127.0.0.9"},
		{&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3).To16(), Port: 1}, "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("::1")}, "::1"},
		{&net.UnixAddr{Name: "/x"}, "invalid IP"},
	} {
		if got := AddrOf(tc.in).String(); got != tc.want {
			t.Errorf("AddrOf(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestLogLimiter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := LogLimiter{Interval: 200 * time.Millisecond}
	for range 100 {
		l.Log(log, slog.LevelWarn, "a", "refused a")
		l.Log(log, slog.LevelWarn, "b", "refused b")
	}
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Fatalf("%d lines for 200 messages of two reasons in a burst, want 2:\n%s", got, buf.String())
	}
	time.Sleep(250 * time.Millisecond)
	l.Log(log, slog.LevelWarn, "a", "refused a")
	if !strings.Contains(buf.String(), "suppressed=99") {
		t.Fatalf("the next message does not count the held-back ones:\n%s", buf.String())
	}
}

func TestListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l := NewListener(ln, NewPerIP(2), "http", slog.New(slog.NewTextHandler(&logs, nil)))
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(ip string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	take := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("nothing accepted")
			return nil
		}
	}
	dial("127.0.0.1")
	dial("127.0.0.1")
	s1, s2 := take(), take()
	// The third from that address is closed at once; another address is not.
	third := dial("127.0.0.1")
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := third.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
		t.Fatalf("third connection: read %d, %v; want it closed", n, err)
	}
	dial("127.0.0.2")
	take()
	if l.Refused() != 1 {
		t.Fatalf("refused %d, want 1", l.Refused())
	}
	if !strings.Contains(logs.String(), "too many connections from one address") || !strings.Contains(logs.String(), "127.0.0.1") {
		t.Fatalf("refusal not logged with its address: %s", logs.String())
	}
	// The connection keeps what the sender needs, and closing releases.
	if _, ok := s1.(syscall.Conn); !ok {
		t.Fatal("accepted connection hides SyscallConn")
	}
	s1.Close()
	s1.Close() // releases once
	if got := l.Open(netip.MustParseAddr("127.0.0.1")); got != 1 {
		t.Fatalf("open %d after a close, want 1", got)
	}
	dial("127.0.0.1")
	take()
	s2.Close()
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}
