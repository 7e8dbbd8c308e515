// Package connlimit bounds how many connections, or sessions, one client
// address may hold, and logs refused connections without flooding the log.
package connlimit

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// PerIP counts connections (or sessions) by client address and refuses
// those past a limit: directly with Acquire and Release, or for waiting
// connections through Slots. A nil *PerIP accepts everything.
type PerIP struct {
	max     atomic.Int64
	mu      sync.Mutex
	open    map[netip.Addr]int
	refused atomic.Uint64
}

// NewPerIP returns a counter allowing max per address at once; max <= 0
// means no limit.
func NewPerIP(max int) *PerIP {
	p := &PerIP{open: make(map[netip.Addr]int)}
	p.SetMax(max)
	return p
}

// Max returns the limit; 0 means none.
func (p *PerIP) Max() int {
	if p == nil {
		return 0
	}
	return int(max(p.max.Load(), 0))
}

// SetMax changes the limit (a reload): what Acquire and Enter admit from
// now on; what they admitted stays.
func (p *PerIP) SetMax(n int) { p.max.Store(int64(max(n, 0))) }

// Acquire counts one more from ip and reports whether it is within the
// limit. A refused one is not counted and needs no Release. Without a
// limit it always accepts, and counts, so that a limit set later (SetMax)
// finds the counts right. For an address it cannot tell (an invalid ip)
// it accepts and counts nothing.
func (p *PerIP) Acquire(ip netip.Addr) bool {
	if p == nil || !ip.IsValid() {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.Max(); m > 0 && p.open[ip] >= m {
		p.refused.Add(1)
		return false
	}
	p.open[ip]++
	return true
}

// Release uncounts one Acquire accepted.
func (p *PerIP) Release(ip netip.Addr) {
	if p == nil || !ip.IsValid() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.open[ip]; n > 1 {
		p.open[ip] = n - 1
	} else {
		delete(p.open, ip)
	}
}

// Open returns what is counted for ip.
func (p *PerIP) Open(ip netip.Addr) int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[ip]
}

// Refused returns how many Acquire and Enter have refused, and Slots that
// aged in past the limit.
func (p *PerIP) Refused() uint64 {
	if p == nil {
		return 0
	}
	return p.refused.Load()
}

// AddrOf returns the IP address of a TCP or UDP address, IPv4-mapped IPv6
// addresses unmapped; the zero Addr for anything else.
func AddrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return netip.Addr{}
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return addr.Unmap()
}

// LogLimiter lets a message through at most once per Interval for each
// reason, and counts what it holds back. The zero value is ready to use
// with an interval of one second.
type LogLimiter struct {
	// Interval is the least time between two messages of one reason.
	// Defaults to 1s.
	Interval time.Duration

	mu      sync.Mutex
	reasons map[string]*logState
}

type logState struct {
	last       time.Time
	suppressed int
}

// Allow reports whether a message for reason may be logged now and, if
// so, how many were held back since the last one.
func (l *LogLimiter) Allow(reason string) (ok bool, suppressed int) {
	interval := l.Interval
	if interval <= 0 {
		interval = time.Second
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reasons == nil {
		l.reasons = make(map[string]*logState)
	}
	st := l.reasons[reason]
	if st == nil {
		st = &logState{}
		l.reasons[reason] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < interval {
		st.suppressed++
		return false, 0
	}
	st.last = now
	suppressed, st.suppressed = st.suppressed, 0
	return true, suppressed
}

// Log logs msg with args on log unless a message of the same reason went
// out less than Interval ago; a message that follows held-back ones says
// how many with a "suppressed" attribute.
func (l *LogLimiter) Log(log *slog.Logger, level slog.Level, reason, msg string, args ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	ok, n := l.Allow(reason)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
}

// Refusals counts the connections a listener's limits have closed, as
// meshcast_connections_refused_total reports them.
type Refusals struct {
	// MaxConnections counts connections refused at the listener's bound
	// on connections (--max-connections).
	MaxConnections uint64
	// PerIP counts connections refused, or closed while waiting, at the
	// bound per address (--max-connections-per-ip).
	PerIP uint64
	// HandshakeTimeout counts connections closed for not publishing or
	// playing within the handshake timeout.
	HandshakeTimeout uint64
}
