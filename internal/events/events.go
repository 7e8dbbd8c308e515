// Package events pushes a node's live events to browsers over Socket.IO
// (protocol v4, as socket.io-client 4 speaks it) and carries chat between
// the viewers of a stream.
//
// Every client gets "hello" on connect; "streams", "stream:start" and
// "stream:end" as streams come and go; and, in the room of each stream it
// joined, "viewers" (at most once a poll interval, when the count changed)
// and "chat". With Redis, chat and stream start/end cross nodes over one
// pub/sub channel.
//
// Nothing here ever waits on a client or on Redis while holding up media
// or another client: hub events and outgoing Redis messages go through
// bounded queues that drop when full, a client whose outgoing backlog
// grows past a bound is disconnected, and every Redis call has a timeout.
package events

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Limits.
const (
	// DefaultMaxClients is the default bound on connected sockets.
	DefaultMaxClients = 10000
	// MaxRooms is how many stream rooms one socket may be in.
	MaxRooms = 16
	// MaxChatLen is the longest chat message, in characters.
	MaxChatLen = 500
	// ChatBurst messages per ChatWindow are allowed to one socket.
	ChatBurst  = 5
	ChatWindow = 10 * time.Second
	// DefaultPollInterval is how often rooms' viewer counts are polled, and
	// so the least time between two "viewers" events of a stream.
	DefaultPollInterval = time.Second
	// DefaultStatsInterval is how often subscribers get "stats".
	DefaultStatsInterval = 2 * time.Second

	// maxBacklog is how many packets may wait to be written to one socket;
	// a socket further behind is disconnected.
	maxBacklog = 256
	// hubQueue bounds the hub events waiting for the event loop.
	hubQueue = 256
	// maxMessageBytes bounds one incoming Socket.IO message (HTTP body or
	// WebSocket frame).
	maxMessageBytes = 32 << 10
	// closeWait bounds how long Close waits for the library's connections
	// to finish closing.
	closeWait = 3 * time.Second
)

// Counts are a stream's viewers on this node by protocol.
type Counts struct {
	RTMP   int `json:"rtmp"`
	FLV    int `json:"flv"`
	HLS    int `json:"hls"`
	SRT    int `json:"srt"`
	WebRTC int `json:"webrtc"` // WHEP
	RTSP   int `json:"rtsp"`
}

// Total is the sum over protocols.
func (c Counts) Total() int { return c.RTMP + c.FLV + c.HLS + c.SRT + c.WebRTC + c.RTSP }

// Source is what the server reports on: the node's streams and viewers.
// Both are called from the event loop and from Socket.IO handlers, never
// per packet.
type Source interface {
	// Streams lists the streams on this node, sorted.
	Streams() []streamname.Name
	// Viewers counts a stream's viewers on this node (zero when absent).
	Viewers(streamname.Name) Counts
}

// Config configures a Server.
type Config struct {
	// Node is this node's ID, sent in "hello" and stamped on what it
	// publishes to other nodes.
	Node string
	// Version is the server's version, sent in "hello".
	Version string
	// MaxClients bounds connected sockets; further connections are
	// refused. Defaults to DefaultMaxClients.
	MaxClients int
	// Redis is the cluster's Redis URL; empty keeps events on this node.
	Redis string
	// RedisPrefix starts the pub/sub channel's name ("<prefix>events").
	RedisPrefix string
	// PollInterval defaults to DefaultPollInterval.
	PollInterval time.Duration
	// Stats, when set, describes the node's streams in full (codecs,
	// bitrate, viewers, uptime, owner) for dashboards: a socket that emits
	// "stats:subscribe" gets it as "stats" at once and then every
	// StatsInterval, until "stats:unsubscribe". It is called at most once
	// an interval, and only while some socket is subscribed.
	Stats func() json.RawMessage
	// ClusterStats, when set, describes the whole cluster's streams (the
	// cluster listing): "stats" subscribers get it as "cluster:streams"
	// beside each "stats".
	ClusterStats func() json.RawMessage
	// StatsInterval defaults to DefaultStatsInterval.
	StatsInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server is the Socket.IO server of one node.
type Server struct {
	cfg    Config
	log    *slog.Logger
	src    Source
	io     *socket.Server
	engine http.Handler
	bus    *bus // nil without Redis

	// deliver writes one event to one client; tests replace it.
	deliver func(c *client, ev string, payload json.RawMessage)
	now     func() time.Time

	mu       sync.Mutex
	closed   bool
	clients  map[*client]struct{}
	rooms    map[streamname.Name]*room
	inflight map[*http.Request]context.CancelFunc // requests in the library
	requests sync.WaitGroup                       // the same, to wait for

	hubEv     chan hub.Event
	notes     chan note // for "stats" subscribers (Notify)
	hubDrops  atomic.Int64
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	// Owned by the event loop.
	streams   []streamname.Name        // last list sent in "streams"
	published map[streamname.Name]bool // streams published here, for start/end
}

// client is one connected socket.
type client struct {
	id    string
	sock  *socket.Socket // nil in tests
	rooms map[streamname.Name]struct{}
	stats bool        // subscribed to "stats"; guarded by Server.mu
	chat  rateLimiter // used by the socket's own event goroutine only

	backlog atomic.Int64 // packets queued to the socket, not yet flushed
	cut     atomic.Bool  // disconnected for its backlog
}

// New builds a server reporting on src. Serve its Handler at /socket.io/
// and Close it when done.
func New(cfg Config, src Source) (*Server, error) {
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "events"),
		src:       src,
		now:       time.Now,
		clients:   make(map[*client]struct{}),
		rooms:     make(map[streamname.Name]*room),
		inflight:  make(map[*http.Request]context.CancelFunc),
		hubEv:     make(chan hub.Event, hubQueue),
		notes:     make(chan note, hubQueue),
		stop:      make(chan struct{}),
		published: make(map[streamname.Name]bool),
	}
	s.deliver = s.emit
	if cfg.Redis != "" {
		b, err := newBus(cfg.Redis, cfg.RedisPrefix+"events", cfg.Node, s.log, s.fromBus)
		if err != nil {
			return nil, err
		}
		s.bus = b
	}

	opts := socket.DefaultServerOptions()
	opts.SetServeClient(false) // served from the npm package: see ClientFiles
	opts.SetMaxHttpBufferSize(maxMessageBytes)
	opts.SetConnectTimeout(10 * time.Second)
	opts.SetAllowRequest(func(*types.HttpContext) error {
		if s.io.Engine().ClientsCount() >= uint64(s.cfg.MaxClients) {
			return errTooMany
		}
		return nil
	})
	s.io = socket.NewServer(nil, opts)
	s.engine = s.io.ServeHandler(nil)
	s.io.Engine().Use(watchPolls)
	s.io.On("connection", func(args ...any) {
		if sock, ok := args[0].(*socket.Socket); ok {
			s.connect(sock)
		}
	})
	s.streams = src.Streams()

	s.wg.Add(1)
	go s.run()
	if s.bus != nil {
		s.bus.start(&s.wg, s.stop)
	}
	return s, nil
}

// HubEvent takes a hub event; subscribe it with hub.Subscribe. It never
// blocks: when the event loop is behind, the event is dropped and the
// next poll catches up on the stream list.
func (s *Server) HubEvent(ev hub.Event) {
	switch ev.Type {
	case "publish", "unpublish", "end":
	default:
		return
	}
	select {
	case <-s.stop:
	case s.hubEv <- ev:
	default:
		if s.hubDrops.Add(1) == 1 {
			s.log.Warn("event loop behind: dropping hub events")
		}
	}
}

// note is an event for the "stats" subscribers.
type note struct {
	ev      string
	payload json.RawMessage
}

// Notify sends ev to the sockets subscribed to "stats" (the dashboards).
// It never blocks: when the event loop is behind, the note is dropped,
// and the next "stats" carries the same state.
func (s *Server) Notify(ev string, payload json.RawMessage) {
	select {
	case <-s.stop:
	case s.notes <- note{ev, payload}:
	default:
	}
}

// Clients counts the connected sockets.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Close disconnects every client, stops the event loop and the Redis
// subscription, and waits for them.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		done := make(chan struct{})
		s.io.Close(func(error) { close(done) })
		select {
		case <-done:
		case <-time.After(closeWait):
		}
		// End the requests still in the library (pending polls), and wait
		// for them and for its connections, so that no goroutine of
		// theirs outlives us.
		s.mu.Lock()
		for _, cancel := range s.inflight {
			cancel()
		}
		s.mu.Unlock()
		waitUntil(closeWait, func() bool { return s.io.Engine().ClientsCount() == 0 })
		reqs := make(chan struct{})
		go func() { s.requests.Wait(); close(reqs) }()
		select {
		case <-reqs:
		case <-time.After(closeWait):
			s.log.Warn("events: requests still running after close")
		}
		if s.bus != nil {
			s.bus.shutdown()
		}
		s.wg.Wait()
		if s.bus != nil {
			s.bus.release()
		}
	})
}

// waitUntil polls cond for up to d.
func waitUntil(d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// emit writes ev to c's socket unless its backlog is over the bound, in
// which case the socket is disconnected. Never called with s.mu held.
func (s *Server) emit(c *client, ev string, payload json.RawMessage) {
	if c.sock == nil || c.cut.Load() {
		return
	}
	if c.backlog.Load() >= maxBacklog {
		if c.cut.CompareAndSwap(false, true) {
			s.log.Info("events client too slow: disconnected", "socket", c.id, "backlog", c.backlog.Load())
			c.sock.Disconnect(true)
		}
		return
	}
	if err := c.sock.Emit(ev, payload); err != nil {
		s.log.Debug("events emit", "event", ev, "err", err)
	}
}

// run is the event loop: hub events, and the poll of the stream list and
// of the rooms' viewers. Polls are a whole interval apart (a timer reset
// after each), so no stream's viewers are sent more often.
func (s *Server) run() {
	defer s.wg.Done()
	t := time.NewTimer(s.cfg.PollInterval)
	defer t.Stop()
	st := time.NewTicker(s.cfg.StatsInterval)
	defer st.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-st.C:
			s.sendStats()
		case n := <-s.notes:
			s.toStats(n.ev, n.payload)
		case ev := <-s.hubEv:
			s.onHubEvent(ev)
			for more := true; more; {
				select {
				case ev := <-s.hubEv:
					s.onHubEvent(ev)
				default:
					more = false
				}
			}
			s.syncStreams()
		case <-t.C:
			if n := s.hubDrops.Swap(0); n > 0 {
				s.log.Warn("hub events dropped", "count", n)
			}
			s.syncStreams()
			s.pollViewers()
			t.Reset(s.cfg.PollInterval)
		}
	}
}

// onHubEvent turns a stream published here starting or ending into
// stream:start or stream:end, here and on the other nodes. Relayed
// streams are not announced: their owner does that.
func (s *Server) onHubEvent(ev hub.Event) {
	var typ string
	switch {
	case ev.Type == "publish" && !s.published[ev.Name]:
		s.published[ev.Name] = true
		typ = "stream:start"
	case ev.Type == "end" && s.published[ev.Name]:
		delete(s.published, ev.Name)
		typ = "stream:end"
	default:
		return
	}
	s.toAll(typ, mustJSON(streamEvent{Stream: string(ev.Name), Node: s.cfg.Node}))
	if s.bus != nil {
		s.bus.publish(busMessage{Type: typ, Stream: string(ev.Name)})
	}
}

// syncStreams sends "streams" when the node's list changed.
func (s *Server) syncStreams() {
	cur := s.src.Streams()
	if slices.Equal(cur, s.streams) {
		return
	}
	s.streams = cur
	s.toAll("streams", mustJSON(streamList{Node: s.cfg.Node, Streams: names(cur)}))
}

// pollViewers sends "viewers" to each room whose stream's counts changed
// since they were last sent to it.
func (s *Server) pollViewers() {
	s.mu.Lock()
	polled := make([]streamname.Name, 0, len(s.rooms))
	for name := range s.rooms {
		polled = append(polled, name)
	}
	s.mu.Unlock()
	counts := make([]Counts, len(polled))
	for i, name := range polled {
		counts[i] = s.src.Viewers(name) // outside s.mu: takes the hub's locks
	}
	type send struct {
		name   streamname.Name
		counts Counts
		to     []*client
	}
	var sends []send
	s.mu.Lock()
	for i, name := range polled {
		r := s.rooms[name]
		if r == nil || r.sent == counts[i] {
			continue
		}
		r.sent = counts[i]
		to := make([]*client, 0, len(r.members))
		for c := range r.members {
			to = append(to, c)
		}
		sends = append(sends, send{name, counts[i], to})
	}
	s.mu.Unlock()
	for _, sd := range sends {
		p := viewersPayload(sd.name, sd.counts)
		for _, c := range sd.to {
			s.deliver(c, "viewers", p)
		}
	}
}

// Payloads.
