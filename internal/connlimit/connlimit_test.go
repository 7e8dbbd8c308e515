package connlimit

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
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
	const grace = 100 * time.Millisecond
	l := NewListener(ln, NewPerIP(2), ListenerConfig{Proto: "http", Grace: grace, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
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
	// Both wait, and count once the grace is over.
	waitOpen(t, l.perIP, "127.0.0.1", 2)
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
	if !strings.Contains(logs.String(), "too many waiting connections from one address") || !strings.Contains(logs.String(), "127.0.0.1") {
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
	// A connection serving a request does not count.
	SlotOf(s2).Busy()
	if got := l.Open(netip.MustParseAddr("127.0.0.1")); got != 0 {
		t.Fatalf("open %d with one connection busy and one within its grace, want 0", got)
	}
	s2.Close()
}

// waitOpen waits until p counts n for ip.
func waitOpen(t *testing.T, p *PerIP, ip string, n int) {
	t.Helper()
	addr := netip.MustParseAddr(ip)
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("%s to count %d", ip, n), func() bool { return p.Open(addr) == n })
}

func TestSlot(t *testing.T) {
	const grace = 50 * time.Millisecond
	p := NewPerIP(1)
	ip := netip.MustParseAddr("10.0.0.1")
	var refused atomic.Int32
	enter := func() *Slot {
		t.Helper()
		s, ok := p.Enter(ip, grace, func() { refused.Add(1) })
		if !ok {
			t.Fatal("refused before the address holds the limit")
		}
		return s
	}
	a, b := enter(), enter() // a burst: both let in
	waitOpen(t, p, "10.0.0.1", 1)
	testutil.WaitFor(t, 5*time.Second, "one slot to be refused", func() bool { return refused.Load() == 1 })
	if a.Refused() == b.Refused() {
		t.Fatalf("refused: %v and %v, want one of them", a.Refused(), b.Refused())
	}
	held := a
	if a.Refused() {
		held = b
	}
	// While the address holds the limit, the next is refused at once.
	if _, ok := p.Enter(ip, grace, nil); ok || p.Refused() != 2 {
		t.Fatalf("entered past the limit; refused %d", p.Refused())
	}
	// Busy uncounts; waiting again counts after the grace.
	held.Busy()
	if p.Open(ip) != 0 {
		t.Fatal("a busy slot counts")
	}
	held.Wait(grace)
	held.Wait(time.Hour) // already waiting: no change
	waitOpen(t, p, "10.0.0.1", 1)
	// Leaving uncounts, once; a refused slot's leave does nothing.
	held.Leave()
	held.Leave()
	a.Leave()
	b.Leave()
	if p.Open(ip) != 0 || len(p.open) != 0 {
		t.Fatalf("counts left behind: %v", p.open)
	}
	// A slot that leaves within its grace never counts.
	c := enter()
	c.Leave()
	time.Sleep(2 * grace)
	if p.Open(ip) != 0 || refused.Load() != 1 {
		t.Fatalf("open %d, refused %d after a slot left within its grace", p.Open(ip), refused.Load())
	}
	// No limit, or no address: nil slots, all no-ops.
	for _, q := range []*PerIP{nil, NewPerIP(0)} {
		s, ok := q.Enter(ip, grace, nil)
		if !ok || s != nil {
			t.Fatal("limited without a limit")
		}
		s.Wait(grace)
		s.Busy()
		s.Leave()
	}
	if s, ok := p.Enter(netip.Addr{}, grace, nil); !ok || s != nil {
		t.Fatal("an unknown address was limited")
	}
	if Grace(10*time.Second) != DefaultGrace || Grace(time.Second) != 500*time.Millisecond {
		t.Fatal("Grace: not the lesser of DefaultGrace and half the handshake timeout")
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// BenchmarkSlot is what the per-address limit costs a connection that is
// admitted within its grace: Enter, Busy when its session starts, Leave.
func BenchmarkSlot(b *testing.B) {
	p := NewPerIP(256)
	ip := netip.MustParseAddr("10.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		s, _ := p.Enter(ip, DefaultGrace, nil)
		s.Busy()
		s.Leave()
	}
}

// BenchmarkSlotRequest is what it costs an HTTP keep-alive request: Busy
// when its headers are read, Wait when the connection is idle again.
func BenchmarkSlotRequest(b *testing.B) {
	p := NewPerIP(256)
	s, _ := p.Enter(netip.MustParseAddr("10.0.0.1"), DefaultGrace, nil)
	defer s.Leave()
	b.ReportAllocs()
	for b.Loop() {
		s.Busy()
		s.Wait(DefaultGrace)
	}
}
