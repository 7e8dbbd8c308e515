package connlimit

import (
	"net/netip"
	"sync"
	"time"
)

// A connection that is waiting — accepted but not yet admitted (handshake,
// command phase or request headers unfinished), or an HTTP keep-alive
// connection between requests — counts against its address's limit once it
// has waited longer than a grace period. A burst of real clients behind
// one address (carrier-grade NAT, a campus) finishes its handshakes within
// the grace and is never counted, while sockets that sit idle or half-open
// are: past the limit they are closed as they age in, and new connections
// from the address are refused at once while it holds the limit.

// Slot is one connection's place under a PerIP limit. A nil *Slot (no
// limit, or an address that cannot be told) does nothing.
type Slot struct {
	p      *PerIP
	ip     netip.Addr
	refuse func() // closes the connection when it ages in past the limit

	mu      sync.Mutex
	timer   *time.Timer
	due     time.Time // when a waiting slot ages in; zero while busy
	held    bool      // counted in p
	done    bool      // left, or refused
	refused bool      // closed for aging in past the limit
}

// Enter starts counting a connection from ip that has just been accepted:
// it waits, and ages in after grace. It refuses the connection (false,
// counted as a refusal) when ip already holds the limit. refuse is called,
// from another goroutine, when the connection ages in past the limit; it
// should close the connection, whose Leave then does nothing. Without a
// limit, or for an invalid ip, Enter returns a nil Slot and true.
func (p *PerIP) Enter(ip netip.Addr, grace time.Duration, refuse func()) (*Slot, bool) {
	if p.Max() == 0 || !ip.IsValid() {
		return nil, true
	}
	if p.Full(ip) {
		p.refused.Add(1)
		return nil, false
	}
	s := &Slot{p: p, ip: ip, refuse: refuse}
	s.Wait(grace)
	return s, true
}

// Full reports whether ip holds the limit.
func (p *PerIP) Full(ip netip.Addr) bool {
	if p.Max() == 0 || !ip.IsValid() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[ip] >= p.Max()
}

// Wait marks the connection waiting again (an idle keep-alive connection):
// it ages in after grace unless Busy or Leave comes first.
func (s *Slot) Wait(grace time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.held || !s.due.IsZero() {
		return // already counted, or already waiting
	}
	s.due = time.Now().Add(grace)
	if s.timer == nil {
		s.timer = time.AfterFunc(grace, s.ageIn)
	} else {
		s.timer.Reset(grace)
	}
}

// Busy marks the connection admitted, or serving a request: it no longer
// counts, nor ages in.
func (s *Slot) Busy() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.free()
	s.mu.Unlock()
}

// Leave uncounts a closed connection, for good.
func (s *Slot) Leave() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.free()
	s.done = true
	s.mu.Unlock()
}

// Refused reports whether the connection was closed for aging in past the
// limit.
func (s *Slot) Refused() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// free stops the slot waiting and uncounts it. Callers hold s.mu.
func (s *Slot) free() {
	s.due = time.Time{}
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.held {
		s.held = false
		s.p.Release(s.ip)
	}
}

// ageIn counts a slot that has waited out its grace, or refuses it when
// its address holds the limit.
func (s *Slot) ageIn() {
	s.mu.Lock()
	if s.done || s.held || s.due.IsZero() || time.Now().Before(s.due) {
		s.mu.Unlock() // busy, left, or a timer reset since it fired
		return
	}
	s.due = time.Time{}
	if s.p.Acquire(s.ip) {
		s.held = true
		s.mu.Unlock()
		return
	}
	s.done, s.refused = true, true
	s.mu.Unlock()
	if s.refuse != nil {
		s.refuse()
	}
}

// DefaultGrace is how long a new connection may take to be admitted before
// it counts against its address's limit.
const DefaultGrace = 2 * time.Second

// Grace is the grace of a new connection that has handshake to be admitted:
// DefaultGrace, or half of handshake if that is less, so that a connection
// counts before the handshake timeout closes it.
func Grace(handshake time.Duration) time.Duration {
	return min(DefaultGrace, handshake/2)
}
