// Package hub is a node's table of live streams. It admits publishers (one
// per name), attaches readers, and keeps a stream open for a grace period
// after its publisher leaves so viewers survive a publisher reconnect.
package hub

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/stream"
)

// Errors callers branch on.
var (
	// ErrNotFound is returned when a reader asks for a stream that is not live here.
	ErrNotFound = errors.New("stream not found")
	// ErrBusy is returned when a name already has a live publisher.
	ErrBusy = stream.ErrBusy
	// ErrClosed is returned after the hub is closed.
	ErrClosed = errors.New("hub closed")
)

// Config configures a Hub.
type Config struct {
	// PublisherGrace is how long a stream waits for its publisher to return
	// before it ends for its viewers. Defaults to 0 (end at once).
	PublisherGrace time.Duration
	// Stream configures each stream's log and slow-reader policy.
	Stream stream.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Event reports a change in the stream table.
type Event struct {
	Type string // "publish", "unpublish", "end"
	Name stream.Name
}

// Hub is a node's table of streams by name.
type Hub struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	streams map[stream.Name]*slot
	closed  bool
	subs    []func(Event)
}

// slot is a stream and its grace timer.
type slot struct {
	s     *stream.Stream
	grace *time.Timer
}

// New creates an empty hub.
func New(cfg Config) *Hub {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Hub{cfg: cfg, log: cfg.Logger.With("component", "hub"), streams: make(map[stream.Name]*slot)}
}

// Subscribe registers f to be called, outside the hub's lock, on every event.
func (h *Hub) Subscribe(f func(Event)) {
	h.mu.Lock()
	h.subs = append(h.subs, f)
	h.mu.Unlock()
}

func (h *Hub) emit(ev Event) {
	h.mu.Lock()
	subs := h.subs
	h.mu.Unlock()
	for _, f := range subs {
		f(ev)
	}
}

// Publish attaches a publisher to name, creating the stream or resuming one
// waiting in its grace period. A name with a live publisher is refused with
// ErrBusy and the live publisher is untouched.
func (h *Hub) Publish(name stream.Name, info stream.PublisherInfo) (*stream.Publisher, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	sl := h.streams[name]
	resumed := sl != nil
	if sl == nil {
		sl = &slot{s: stream.New(name, h.cfg.Stream)}
		h.streams[name] = sl
	}
	pub, err := sl.s.Attach(info)
	if err != nil {
		h.mu.Unlock()
		return nil, fmt.Errorf("publish %s: %w", name, err)
	}
	if sl.grace != nil {
		sl.grace.Stop()
		sl.grace = nil
	}
	pub.OnClose(func() { h.unpublished(name, sl) })
	h.mu.Unlock()
	h.log.Info("publish started", "stream", name, "remote", info.RemoteAddr, "protocol", info.Protocol, "resumed", resumed)
	h.emit(Event{Type: "publish", Name: name})
	return pub, nil
}

// unpublished starts the grace period of a stream whose publisher left.
func (h *Hub) unpublished(name stream.Name, sl *slot) {
	h.mu.Lock()
	if h.streams[name] != sl || sl.s.HasPublisher() {
		h.mu.Unlock()
		return
	}
	if h.cfg.PublisherGrace <= 0 {
		delete(h.streams, name)
		h.mu.Unlock()
		sl.s.Close()
		h.log.Info("stream ended", "stream", name)
		h.emit(Event{Type: "unpublish", Name: name})
		h.emit(Event{Type: "end", Name: name})
		return
	}
	sl.grace = time.AfterFunc(h.cfg.PublisherGrace, func() { h.expire(name, sl) })
	h.mu.Unlock()
	h.log.Info("publisher left; waiting for it to return", "stream", name, "grace", h.cfg.PublisherGrace)
	h.emit(Event{Type: "unpublish", Name: name})
}

// expire ends a stream whose grace period ran out without a new publisher.
func (h *Hub) expire(name stream.Name, sl *slot) {
	h.mu.Lock()
	if h.streams[name] != sl || sl.s.HasPublisher() {
		h.mu.Unlock()
		return
	}
	delete(h.streams, name)
	h.mu.Unlock()
	sl.s.Close()
	h.log.Info("stream ended", "stream", name)
	h.emit(Event{Type: "end", Name: name})
}

// NewReader attaches a reader of the given protocol to a stream on this node.
func (h *Hub) NewReader(name stream.Name, proto string) (*stream.Reader, error) {
	h.mu.Lock()
	sl := h.streams[name]
	h.mu.Unlock()
	if sl == nil {
		return nil, ErrNotFound
	}
	r, err := sl.s.NewReader(proto)
	if errors.Is(err, stream.ErrClosed) {
		return nil, ErrNotFound
	}
	return r, err
}

// Get returns the named stream, or nil.
func (h *Hub) Get(name stream.Name) *stream.Stream {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sl := h.streams[name]; sl != nil {
		return sl.s
	}
	return nil
}

// List returns the streams on this node sorted by name.
func (h *Hub) List() []*stream.Stream {
	h.mu.Lock()
	out := make([]*stream.Stream, 0, len(h.streams))
	for _, sl := range h.streams {
		out = append(out, sl.s)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Close ends every stream and refuses new publishers.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	slots := h.streams
	h.streams = make(map[stream.Name]*slot)
	h.mu.Unlock()
	for _, sl := range slots {
		if sl.grace != nil {
			sl.grace.Stop()
		}
		sl.s.Close()
	}
}
