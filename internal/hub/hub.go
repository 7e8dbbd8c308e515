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

	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
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

// Owner admits publishers across the cluster: a stream published on this
// node is claimed for as long as it lives here.
type Owner interface {
	// Claim makes this node the owner of name, or fails (another node owns
	// it, or the registry cannot be reached). credential is the
	// publisher's (stream.PublisherInfo.Credential): presenting the live
	// claim's takes it over from another node. release gives it up.
	// prior is where the stream's timeline stood on its last owner, as
	// the cluster kept it: a stream new here continues it (stream.Follow).
	// nil when there is none; the stream then starts its own.
	Claim(name streamname.Name, credential string) (release func(), prior *stream.Position, err error)
}

// Upstream brings streams this node does not have from elsewhere in the
// cluster.
type Upstream interface {
	// Pull starts relaying name into the hub through OpenRelay, or fails
	// when no node has it. via lists the nodes that a pull asking for the
	// stream passed, none for a viewer of this node (see NewReaderVia).
	Pull(name streamname.Name, via []string) error
}

// Config configures a Hub.
type Config struct {
	// PublisherGrace is how long a stream waits for its publisher to return
	// before it ends for its viewers. Defaults to 0 (end at once).
	PublisherGrace time.Duration
	// Stream configures each stream's log and slow-reader policy.
	Stream stream.Config
	// Owner claims published streams; nil admits every publisher.
	Owner Owner
	// Upstream relays streams asked for but not here; nil relays nothing.
	Upstream Upstream
	// Reserved reports names only a pulled source publishes (publisher
	// protocol "source"); nil: none.
	Reserved func(name streamname.Name) bool
	// MaxSessionsPerIP caps the publishing and playing sessions of one
	// client address at once (see Admit). Defaults to 0: no limit.
	MaxSessionsPerIP int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Event reports a change in the stream table or its sessions.
type Event struct {
	Type    string // "publish", "unpublish", "end", EventSessionStart, EventSessionEnd
	Name    streamname.Name
	Session Session // for session events
}

// Hub is a node's table of streams by name.
type Hub struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	streams map[streamname.Name]*slot
	closed  bool
	subs    []func(Event)

	sessions sessions
}

// slot is a stream and what feeds it: a publisher of this node, whose
// claim it holds (release), or a relay (relay).
type slot struct {
	s       *stream.Stream
	grace   *time.Timer
	release func()            // gives up the claim; nil when not owned here
	relay   *stream.Publisher // the relay feeding the stream, if relayed
}

// New creates an empty hub.
func New(cfg Config) *Hub {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hub{cfg: cfg, log: cfg.Logger.With("component", "hub"), streams: make(map[streamname.Name]*slot)}
	h.sessions.perIP = connlimit.NewPerIP(cfg.MaxSessionsPerIP)
	return h
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
// ErrBusy and the live publisher is untouched, unless info presents the live
// publisher's credential: then the new publisher takes over and the old
// one's session is kicked; so is a name the Owner cannot
// claim. A publisher of a stream this node relays takes it over once claimed:
// the relay stops and the stream's viewers go on with the new publisher.
func (h *Hub) Publish(name streamname.Name, info stream.PublisherInfo) (*stream.Publisher, error) {
	if h.cfg.Reserved != nil && info.Protocol != "source" && h.cfg.Reserved(name) {
		return nil, fmt.Errorf("publish %s: %w: it is pulled from its source", name, ErrBusy)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	sl := h.streams[name]
	if sl != nil && sl.relay == nil && !sl.s.CanTakeOver(info) {
		h.mu.Unlock()
		return nil, fmt.Errorf("publish %s: %w", name, ErrBusy)
	}
	claim := h.cfg.Owner != nil && (sl == nil || sl.release == nil)
	h.mu.Unlock()

	// The claim asks the registry: never under h.mu.
	var release func()
	var prior *stream.Position
	if claim {
		var err error
		if release, prior, err = h.cfg.Owner.Claim(name, info.Credential); err != nil {
			return nil, fmt.Errorf("publish %s: %w", name, err)
		}
	}
	pub, resumed, err := h.attach(name, info, release, prior)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, fmt.Errorf("publish %s: %w", name, err)
	}
	if pub.TookOver() {
		// The same credentials again: the publisher reconnected before its
		// old connection was seen to end. That connection goes.
		h.log.Info("publisher reconnected with the same credentials: closing its old connection", "stream", name)
		h.KickPublisher(name)
	}
	h.log.Info("publish started", "stream", name, "remote", info.RemoteAddr, "protocol", info.Protocol, "resumed", resumed)
	h.emit(Event{Type: "publish", Name: name})
	return pub, nil
}

// attach makes a publisher of name once its claim (if any) is held. A
// stream without packets yet follows prior, the timeline of the stream's
// last owner (nil: none).
func (h *Hub) attach(name streamname.Name, info stream.PublisherInfo, release func(), prior *stream.Position) (pub *stream.Publisher, resumed bool, err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, false, ErrClosed
	}
	sl := h.streams[name]
	if sl != nil && sl.relay != nil {
		// Taken over from a relay: detach it; its viewers stay.
		relay := sl.relay
		sl.relay = nil
		h.mu.Unlock()
		relay.Close()
		h.log.Info("relay replaced by a local publisher", "stream", name)
		h.mu.Lock()
		if h.closed || h.streams[name] != sl {
			h.mu.Unlock()
			return h.attach(name, info, release, prior)
		}
	}
	resumed = sl != nil
	if sl == nil {
		sl = &slot{s: stream.New(name, h.cfg.Stream)}
		h.streams[name] = sl
	}
	if prior != nil {
		sl.s.Follow(*prior) // kept only by a stream with no packets
	}
	pub, err = sl.s.Attach(info)
	if err != nil {
		h.mu.Unlock()
		return nil, false, err
	}
	if sl.grace != nil {
		sl.grace.Stop()
		sl.grace = nil
	}
	if release != nil {
		if sl.release != nil {
			sl.release() // an older claim of this node, superseded
		}
		sl.release = release
	}
	pub.OnClose(func() { h.unpublished(name, sl) })
	h.mu.Unlock()
	return pub, resumed, nil
}

// OpenRelay creates the stream name fed by a relay from another node, for
// an Upstream. It fails with ErrBusy when the stream exists here already.
func (h *Hub) OpenRelay(name streamname.Name, from string) (*stream.Publisher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if h.streams[name] != nil {
		return nil, ErrBusy
	}
	sl := &slot{s: stream.New(name, h.cfg.Stream)}
	pub, err := sl.s.Attach(stream.PublisherInfo{Protocol: "relay", RemoteAddr: from})
	if err != nil {
		return nil, err
	}
	sl.relay = pub
	h.streams[name] = sl
	pub.OnClose(func() { h.relayClosed(name, sl, pub) })
	h.log.Info("relay started", "stream", name, "from", from)
	return pub, nil
}

// relayClosed ends a relayed stream when its relay gives up.
func (h *Hub) relayClosed(name streamname.Name, sl *slot, pub *stream.Publisher) {
	h.mu.Lock()
	if h.streams[name] != sl || sl.relay != pub {
		h.mu.Unlock() // a local publisher took the stream over
		return
	}
	delete(h.streams, name)
	h.mu.Unlock()
	sl.s.Close()
	h.log.Info("relay ended", "stream", name)
	h.emit(Event{Type: "end", Name: name})
}

// ErrMoved ends the readers of a stream revoked here: it went to another
// node. Other nodes' relays pulling it look for it again rather than end.
var ErrMoved = errors.New("stream moved to another node")

// Revoke ends a stream this node owned but has lost to a newer claim
// elsewhere: its publisher and viewers are disconnected, and relays
// pulling it from here (which get no end of stream) find the new owner.
func (h *Hub) Revoke(name streamname.Name) {
	h.mu.Lock()
	sl := h.streams[name]
	if sl == nil || sl.release == nil {
		h.mu.Unlock()
		return
	}
	delete(h.streams, name)
	if sl.grace != nil {
		sl.grace.Stop()
	}
	h.mu.Unlock()
	sl.s.CloseWith(ErrMoved)
	h.log.Warn("stream revoked: another node owns it now", "stream", name)
	h.emit(Event{Type: "end", Name: name})
}

// unpublished starts the grace period of a stream whose publisher left.
func (h *Hub) unpublished(name streamname.Name, sl *slot) {
	h.mu.Lock()
	if h.streams[name] != sl || sl.s.HasPublisher() {
		h.mu.Unlock()
		return
	}
	if h.cfg.PublisherGrace <= 0 {
		delete(h.streams, name)
		h.mu.Unlock()
		h.end(name, sl)
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
func (h *Hub) expire(name streamname.Name, sl *slot) {
	h.mu.Lock()
	if h.streams[name] != sl || sl.s.HasPublisher() {
		h.mu.Unlock()
		return
	}
	delete(h.streams, name)
	h.mu.Unlock()
	h.end(name, sl)
	h.emit(Event{Type: "end", Name: name})
}

// end closes a stream removed from the table and gives up its claim.
func (h *Hub) end(name streamname.Name, sl *slot) {
	sl.s.Close()
	if sl.release != nil {
		sl.release()
	}
	h.log.Info("stream ended", "stream", name)
}

// NewReader attaches a reader of the given protocol to a stream on this
// node, relaying it from another node first when the hub has an Upstream.
func (h *Hub) NewReader(name streamname.Name, proto string) (*stream.Reader, error) {
	return h.NewReaderVia(name, proto, nil)
}

// NewReaderVia is NewReader for another node's pull that passed the nodes
// via: a relay it starts carries them on, so relays never pull in a
// circle.
func (h *Hub) NewReaderVia(name streamname.Name, proto string, via []string) (*stream.Reader, error) {
	h.mu.Lock()
	sl := h.streams[name]
	closed := h.closed
	stopped := sl != nil && sl.grace != nil
	h.mu.Unlock()
	if stopped && !closed && h.cfg.Upstream != nil && h.cfg.Reserved != nil && h.cfg.Reserved(name) {
		// A pulled source that stopped for want of viewers waits out its
		// grace like any publisher; a viewer arriving meanwhile starts it
		// again, and the stream resumes for every reader.
		if err := h.cfg.Upstream.Pull(name, via); err != nil {
			h.log.Debug("source not restarted for a viewer", "stream", name, "err", err)
		}
	}
	if sl == nil && !closed && h.cfg.Upstream != nil {
		if err := h.cfg.Upstream.Pull(name, via); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		h.mu.Lock()
		sl = h.streams[name]
		h.mu.Unlock()
	}
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
func (h *Hub) Get(name streamname.Name) *stream.Stream {
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

// Load counts the streams on this node and their viewers of every protocol
// but relays to other nodes and recordings.
func (h *Hub) Load() (streams, viewers int) {
	for _, s := range h.List() {
		streams++
		for proto, n := range s.Stats().ReaderCount {
			if proto != RelayProtocol && Watching(proto) {
				viewers += n
			}
		}
	}
	return streams, viewers
}

// RelayProtocol is the reader protocol of other nodes pulling a stream.
const RelayProtocol = "relay"

// RecordProtocol is the reader protocol of recordings to files.
const RecordProtocol = "record"

// TranscodeProtocol is the reader protocol of the node's own
// transcoders, such as WebRTC's audio.
const TranscodeProtocol = "transcode"

// Watching reports whether the readers of protocol proto are people
// watching, rather than recordings or the node's own transcoders.
func Watching(proto string) bool {
	return proto != RecordProtocol && proto != TranscodeProtocol && proto != SnapshotProtocol && proto != "push"
}

// SnapshotProtocol is the reader protocol of a snapshot's decoder, which
// takes a stream's latest keyframe: nobody watching.
const SnapshotProtocol = "snapshot"

// Close ends every stream, gives up their claims and refuses new publishers.
// Readers get stream.ErrShutdown, not the end of the stream: other nodes'
// relays pulling from here keep their viewers and look for the stream
// again, which its publisher brings to another node.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	slots := h.streams
	h.streams = make(map[streamname.Name]*slot)
	h.mu.Unlock()
	for name, sl := range slots {
		if sl.grace != nil {
			sl.grace.Stop()
		}
		sl.s.CloseWith(stream.ErrShutdown)
		h.end(name, sl)
	}
}
