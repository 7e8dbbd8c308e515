package events

// Rooms: one per stream, joined by clients that follow it, and what is
// sent to a room or to everybody.

import (
	"encoding/json"

	"github.com/meshcast/meshcast/internal/streamname"
)

// room is a stream's room: its local members and the viewer counts they
// were last sent.
type room struct {
	members map[*client]struct{}
	sent    Counts
}

// onJoin adds c to a stream's room and sends it the stream's viewers.
// Invalid names are ignored; a socket in MaxRooms rooms gets an error.
func (s *Server) onJoin(c *client, arg any) {
	name, ok := roomName(arg)
	if !ok {
		return
	}
	counts := s.src.Viewers(name)
	s.mu.Lock()
	_, connected := s.clients[c]
	if _, in := c.rooms[name]; in || !connected {
		s.mu.Unlock()
		return
	}
	if len(c.rooms) >= MaxRooms {
		s.mu.Unlock()
		s.deliver(c, "error", errorPayload("too_many_rooms", name))
		return
	}
	c.rooms[name] = struct{}{}
	r := s.rooms[name]
	if r == nil {
		r = &room{members: make(map[*client]struct{}), sent: counts}
		s.rooms[name] = r
	}
	r.members[c] = struct{}{}
	s.mu.Unlock()
	s.deliver(c, "viewers", viewersPayload(name, counts))
}

// onStats subscribes c to "stats", sending the current ones, or
// unsubscribes it.
func (s *Server) onStats(c *client, on bool) {
	if s.cfg.Stats == nil {
		return
	}
	s.mu.Lock()
	_, connected := s.clients[c]
	was := c.stats
	c.stats = on && connected
	s.mu.Unlock()
	if c.stats && !was {
		s.deliver(c, "stats", s.cfg.Stats())
		if s.cfg.ClusterStats != nil {
			if cluster := s.cfg.ClusterStats(); cluster != nil {
				s.deliver(c, "cluster:streams", cluster)
			}
		}
	}
}

// statsClients returns the "stats" subscribers.
func (s *Server) statsClients() []*client {
	s.mu.Lock()
	defer s.mu.Unlock()
	var to []*client
	for c := range s.clients {
		if c.stats {
			to = append(to, c)
		}
	}
	return to
}

// toStats sends ev to the "stats" subscribers.
func (s *Server) toStats(ev string, payload json.RawMessage) {
	for _, c := range s.statsClients() {
		s.deliver(c, ev, payload)
	}
}

// sendStats sends "stats" to its subscribers, if there are any.
func (s *Server) sendStats() {
	if s.cfg.Stats == nil {
		return
	}
	to := s.statsClients()
	if len(to) == 0 {
		return
	}
	payload := s.cfg.Stats()
	var cluster json.RawMessage
	if s.cfg.ClusterStats != nil {
		cluster = s.cfg.ClusterStats()
	}
	for _, c := range to {
		s.deliver(c, "stats", payload)
		if cluster != nil {
			s.deliver(c, "cluster:streams", cluster)
		}
	}
}

// onLeave takes c out of a stream's room; anything else is ignored.
func (s *Server) onLeave(c *client, arg any) {
	name, ok := roomName(arg)
	if !ok {
		return
	}
	s.mu.Lock()
	s.leaveLocked(c, name)
	s.mu.Unlock()
}

func (s *Server) leaveLocked(c *client, name streamname.Name) {
	if _, in := c.rooms[name]; !in {
		return
	}
	delete(c.rooms, name)
	if r := s.rooms[name]; r != nil {
		delete(r.members, c)
		if len(r.members) == 0 {
			delete(s.rooms, name)
		}
	}
}

// roomName reads a join or leave argument: "APP/STREAM".
func roomName(arg any) (streamname.Name, bool) {
	str, ok := arg.(string)
	if !ok {
		return "", false
	}
	name, err := streamname.Parse(str)
	return name, err == nil
}

// fromBus delivers a message another node published.
func (s *Server) fromBus(m busMessage) {
	name, err := streamname.Parse(m.Stream)
	if err != nil {
		return
	}
	switch m.Type {
	case "chat":
		text := cleanText(m.Text)
		if text == "" || len([]rune(text)) > MaxChatLen {
			return
		}
		s.toRoom(name, "chat", mustJSON(chatMessage{Stream: string(name), Text: text, From: m.From, Time: m.Time}))
	case "stream:start", "stream:end":
		s.toAll(m.Type, mustJSON(streamEvent{Stream: string(name), Node: m.Origin}))
	}
}

// toRoom sends an event to the local members of a stream's room.
func (s *Server) toRoom(name streamname.Name, ev string, payload json.RawMessage) {
	s.mu.Lock()
	var to []*client
	if r := s.rooms[name]; r != nil {
		to = make([]*client, 0, len(r.members))
		for c := range r.members {
			to = append(to, c)
		}
	}
	s.mu.Unlock()
	for _, c := range to {
		s.deliver(c, ev, payload)
	}
}

// Broadcast sends ev with v, as JSON, to every client of this node.
func (s *Server) Broadcast(ev string, v any) { s.toAll(ev, mustJSON(v)) }

// toAll sends an event to every local client.
func (s *Server) toAll(ev string, payload json.RawMessage) {
	s.mu.Lock()
	to := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		to = append(to, c)
	}
	s.mu.Unlock()
	for _, c := range to {
		s.deliver(c, ev, payload)
	}
}
