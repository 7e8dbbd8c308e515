package hub

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/stream"
)

// SessionKind says whether a session publishes or plays.
type SessionKind string

// Session kinds.
const (
	KindPublish SessionKind = "publish"
	KindPlay    SessionKind = "play"
)

// Session is one client connection publishing or playing a stream.
type Session struct {
	ID         string      `json:"id"`
	Kind       SessionKind `json:"kind"`
	Protocol   string      `json:"protocol"`
	Stream     stream.Name `json:"stream"`
	RemoteAddr string      `json:"remote_addr"`
	Started    time.Time   `json:"started"`
}

// Session events, emitted to subscribers with the session.
const (
	EventSessionStart = "session_start"
	EventSessionEnd   = "session_end"
)

// sessions is the hub's table of client sessions; each connection holds at
// most one, so it is bounded by the servers' connection limits.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
}

type session struct {
	Session
	kick func()
	end  func()
}

// StartSession records s (its ID and start time are filled in) and emits
// its start. kick ends the session's connection, for an operator. end
// removes the session and emits its end; call it once, when the
// connection's publishing or playing ends.
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
func (h *Hub) KickPublisher(name stream.Name) bool {
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
