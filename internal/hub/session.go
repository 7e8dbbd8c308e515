package hub

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/streamname"
)

// ErrTooManySessions is returned by Admit when the client's address holds
// MaxSessionsPerIP sessions.
var ErrTooManySessions = errors.New("too many viewers from this address")

// SessionKind says whether a session publishes or plays.
type SessionKind string

// Session kinds.
const (
	KindPublish SessionKind = "publish"
	KindPlay    SessionKind = "play"
)

// Session is one client connection publishing or playing a stream.
type Session struct {
	ID         string          `json:"id"`
	Kind       SessionKind     `json:"kind"`
	Protocol   string          `json:"protocol"`
	Stream     streamname.Name `json:"stream"`
	RemoteAddr string          `json:"remote_addr"`
	Started    time.Time       `json:"started"`
	// Place is the session's place under MaxSessionsPerIP, from Admit;
	// the session's end releases it.
	Place *Place `json:"-"`
}

// Session events, emitted to subscribers with the session.
const (
	EventSessionStart = "session_start"
	EventSessionEnd   = "session_end"
)

// sessions is the hub's table of client sessions; each connection holds at
// most one, so it is bounded by the servers' connection limits.
type sessions struct {
	perIP *connlimit.PerIP // sessions by client address

	mu      sync.Mutex
	byID    map[string]*session
	refused map[string]uint64 // by protocol: a fixed, small set
}

// Place is one session's place under the hub's MaxSessionsPerIP. A nil
// *Place holds none.
type Place struct {
	perIP *connlimit.PerIP
	ip    netip.Addr
	once  sync.Once
}

// Release gives the place up; only the first call counts.
func (p *Place) Release() {
	if p != nil {
		p.once.Do(func() { p.perIP.Release(p.ip) })
	}
}

// Admit takes a place for one more session of proto from remote (the
// client's "IP:port", or IP) before the session is set up, or refuses it
// with ErrTooManySessions when that address holds MaxSessionsPerIP
// sessions. Give the place to StartSession in Session.Place, or Release it
// if the session never starts. Without a limit the place is counted all
// the same, so that a limit set later (SetMaxSessionsPerIP) counts the
// sessions already there; for an address it cannot read, the place is nil
// and nothing is counted.
func (h *Hub) Admit(proto, remote string) (*Place, error) {
	ip := remoteIP(remote)
	if !ip.IsValid() {
		return nil, nil
	}
	if !h.sessions.perIP.Acquire(ip) {
		h.sessions.mu.Lock()
		if h.sessions.refused == nil {
			h.sessions.refused = make(map[string]uint64)
		}
		h.sessions.refused[proto]++
		h.sessions.mu.Unlock()
		return nil, fmt.Errorf("%w (at most %d)", ErrTooManySessions, h.sessions.perIP.Max())
	}
	return &Place{perIP: h.sessions.perIP, ip: ip}, nil
}

// SetMaxSessionsPerIP changes MaxSessionsPerIP (a reload): the sessions
// already admitted stay, and count against the new limit.
func (h *Hub) SetMaxSessionsPerIP(n int) { h.sessions.perIP.SetMax(n) }

// SessionRefusals returns how many sessions Admit has refused, by protocol.
func (h *Hub) SessionRefusals() map[string]uint64 {
	h.sessions.mu.Lock()
	defer h.sessions.mu.Unlock()
	out := make(map[string]uint64, len(h.sessions.refused))
	for p, n := range h.sessions.refused {
		out[p] = n
	}
	return out
}

// remoteIP reads a client address, "IP:port" or "IP", IPv4-mapped IPv6
// addresses unmapped; the zero Addr when it is neither.
func remoteIP(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

type session struct {
	Session
	kick func()
	end  func()
}

// StartSession records s (its ID and start time are filled in) and emits
// its start. kick ends the session's connection, for an operator. end
// removes the session, releases its Place and emits its end; call it once,
// when the connection's publishing or playing ends.
func (h *Hub) StartSession(s Session, kick func()) (id string, end func()) {
	var b [8]byte
	rand.Read(b[:])
	s.ID, s.Started = hex.EncodeToString(b[:]), time.Now().UTC()
	var once sync.Once
	end = func() {
		once.Do(func() {
			h.sessions.mu.Lock()
			delete(h.sessions.byID, s.ID)
			h.sessions.mu.Unlock()
			s.Place.Release()
			h.emit(Event{Type: EventSessionEnd, Name: s.Stream, Session: s})
		})
	}
	h.sessions.mu.Lock()
	if h.sessions.byID == nil {
		h.sessions.byID = make(map[string]*session)
	}
	h.sessions.byID[s.ID] = &session{Session: s, kick: kick, end: end}
	h.sessions.mu.Unlock()
	h.emit(Event{Type: EventSessionStart, Name: s.Stream, Session: s})
	return s.ID, end
}

// Sessions lists the sessions, oldest first.
func (h *Hub) Sessions() []Session {
	h.sessions.mu.Lock()
	out := make([]Session, 0, len(h.sessions.byID))
	for _, s := range h.sessions.byID {
		out = append(out, s.Session)
	}
	h.sessions.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Kick ends the session id and its connection; false when there is none.
// The session ends at once, whenever its server notices the closed
// connection.
func (h *Hub) Kick(id string) bool {
	h.sessions.mu.Lock()
	s := h.sessions.byID[id]
	h.sessions.mu.Unlock()
	if s == nil {
		return false
	}
	s.kick()
	s.end()
	return true
}

// KickPublisher ends the connection publishing name here; false when none
// does. The stream waits for a publisher through its grace period as after
// any publisher leaves.
func (h *Hub) KickPublisher(name streamname.Name) bool {
	h.sessions.mu.Lock()
	var kick []*session
	for _, s := range h.sessions.byID {
		if s.Kind == KindPublish && s.Stream == name {
			kick = append(kick, s)
		}
	}
	h.sessions.mu.Unlock()
	for _, s := range kick {
		s.kick()
		s.end()
	}
	return len(kick) > 0
}
