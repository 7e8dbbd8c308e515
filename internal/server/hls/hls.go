// Package hls serves live streams over HTTP Live Streaming. The first
// playlist request for a stream starts one muxer for it, shared by every
// viewer: it follows the stream as a reader and cuts it into fMP4 segments
// with gohlslib. A muxer closes when its stream ends or nobody has asked for
// it for a while.
package hls

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// variant is the HLS flavour the muxers produce: fMP4 segments, or with
// LowLatency low-latency HLS (gohlslib.MuxerVariantLowLatency), fMP4 with
// partial segments.
func (c *Config) variant() gohlslib.MuxerVariant {
	if c.LowLatency {
		return gohlslib.MuxerVariantLowLatency
	}
	return gohlslib.MuxerVariantFMP4
}

// minSegmentCount is the fewest segments gohlslib accepts for variant.
func minSegmentCount(v gohlslib.MuxerVariant) int {
	if v == gohlslib.MuxerVariantLowLatency {
		return 7
	}
	return 3
}

// Errors recorded as the reason a muxer ended.
var (
	errNotFound     = errors.New("hls: stream not found")
	errServerClosed = errors.New("hls: server closed")
	errIdle         = errors.New("hls: idle")
)

// Hub is the part of the node's stream table the HLS server uses.
type Hub interface {
	// NewReader attaches a reader to a live stream; any error means the
	// stream is not available here.
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
}

// Config tunes the HLS server.
type Config struct {
	// SegmentDuration is the shortest segment; a segment ends at the first
	// keyframe after it. Defaults to 1s.
	SegmentDuration time.Duration
	// SegmentCount is how many segments a media playlist lists. Defaults to
	// 7; smaller values are raised to the variant's minimum (3 for fMP4,
	// 7 for low-latency HLS).
	SegmentCount int
	// LowLatency serves low-latency HLS: partial segments of PartDuration,
	// blocking playlist reloads (_HLS_msn, _HLS_part) and preload hints.
	// Players that know only HLS play it as such.
	LowLatency bool
	// PartDuration is the shortest partial segment of low-latency HLS.
	// Defaults to 200ms.
	PartDuration time.Duration
	// IdleTimeout closes a muxer nobody has requested for this long.
	// Defaults to 60s.
	IdleTimeout time.Duration
	// RequestTimeout bounds how long a playlist request waits for the
	// playlist to exist. Defaults to 10s.
	RequestTimeout time.Duration
	// Auth admits players; nil admits everybody.
	Auth auth.Authorizer
	// Renditions lists the live renditions of a stream (transcoding), in
	// the order master.m3u8 lists them after the stream itself. Nil:
	// none.
	Renditions func(ctx context.Context, name streamname.Name) []streamname.Name
	// Logger receives state changes. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.SegmentDuration <= 0 {
		c.SegmentDuration = time.Second
	}
	if c.SegmentCount <= 0 {
		c.SegmentCount = 7
	}
	c.SegmentCount = max(c.SegmentCount, minSegmentCount(c.variant()))
	if c.PartDuration <= 0 {
		c.PartDuration = 200 * time.Millisecond
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server turns live streams into HLS, one muxer per requested stream.
type Server struct {
	cfg Config
	hub Hub
	log *slog.Logger

	mu     sync.Mutex
	muxers map[streamname.Name]*muxer
	closed bool
	stop   chan struct{}
	// wg counts the janitor and every muxer goroutine, which waits for
	// its sessions' watchers.
	wg sync.WaitGroup
}

// New returns a Server that reads streams from hub. Call Close to stop it.
func New(cfg Config, hub Hub) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:    cfg,
		hub:    hub,
		log:    cfg.Logger.With("component", "hls"),
		muxers: make(map[streamname.Name]*muxer),
		stop:   make(chan struct{}),
	}
	s.wg.Add(1)
	go s.janitor()
	return s
}

// Close closes every muxer and waits for all of the server's goroutines.
// Requests arriving afterwards get 503.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
		for _, m := range s.muxers {
			m.cancel(errServerClosed)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// acquire returns the stream's muxer, starting one if start is set and
// there is none, and counts the caller as a user until release. The hub is
// asked under s.mu so concurrent first requests start a single muxer.
func (s *Server) acquire(name streamname.Name, start bool, client string) (*muxer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errServerClosed
	}
	if m := s.muxers[name]; m != nil && m.ctx.Err() == nil {
		m.users++
		m.clients.see(client, time.Now())
		return m, nil
	}
	if !start {
		return nil, errNotFound
	}
	r, err := s.hub.NewReader(name, "hls")
	if err != nil {
		return nil, errors.Join(errNotFound, err)
	}
	// The recent past first: gohlslib lists an fMP4 playlist once it has
	// two whole segments, which the stream's log holds (Reader.Rewind),
	// and a player the balancer moved here asks for the segment before
	// the live one.
	r.Rewind()
	m := newMuxer(s, name, r)
	m.users++
	m.clients.see(client, time.Now())
	s.muxers[name] = m
	s.wg.Add(1)
	go m.run()
	return m, nil
}

// release ends a use of m begun by acquire.
func (s *Server) release(m *muxer) {
	s.mu.Lock()
	m.users--
	m.lastUse = time.Now()
	s.mu.Unlock()
}

// remove forgets m once it has ended, unless a newer muxer took its place.
func (s *Server) remove(m *muxer) {
	s.mu.Lock()
	if s.muxers[m.name] == m {
		delete(s.muxers, m.name)
	}
	s.mu.Unlock()
}

// janitor closes muxers nobody has requested for IdleTimeout. Deciding and
// removing under s.mu, where acquire counts users, means no request is
// ever handed a muxer that is being closed for idleness.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.cfg.IdleTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for name, m := range s.muxers {
				if m.users == 0 && now.Sub(m.lastUse) > s.cfg.IdleTimeout {
					delete(s.muxers, name)
					m.cancel(errIdle)
				}
			}
			s.mu.Unlock()
		}
	}
}

// Viewers estimates the stream's HLS viewers: distinct clients (address and
// user agent) that requested a playlist within the last viewerWindow.
func (s *Server) Viewers(name streamname.Name) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.muxers[name]; m != nil {
		return m.clients.count(time.Now())
	}
	return 0
}

// viewerWindow is how long a client counts as watching after its latest
// playlist request; players poll every segment duration or so.
const viewerWindow = 10 * time.Second

// maxClients bounds the clients remembered per stream.
const maxClients = 100000

// clientSet remembers when each client last asked for a playlist. Guarded
// by Server.mu.
type clientSet map[string]time.Time

func (c clientSet) see(client string, now time.Time) {
	if client == "" {
		return
	}
	if _, ok := c[client]; !ok && len(c) >= maxClients {
		c.prune(now)
		if len(c) >= maxClients {
			return
		}
	}
	c[client] = now
}

func (c clientSet) prune(now time.Time) {
	for k, t := range c {
		if now.Sub(t) > viewerWindow {
			delete(c, k)
		}
	}
}

func (c clientSet) count(now time.Time) int {
	c.prune(now)
	return len(c)
}

// clientKey identifies a player for viewer counts: its address and user agent.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ua := r.UserAgent()
	if len(ua) > 128 {
		ua = ua[:128]
	}
	return host + "|" + ua
}

// ServeStream answers a request for one HLS file (index.m3u8, a media
// playlist, an init file, a segment or a part) of the named stream.
func (s *Server) ServeStream(w http.ResponseWriter, r *http.Request, name streamname.Name, file string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		preflight(w)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch classify(file) {
	case kindPlaylist:
		s.servePlaylist(w, r, name, file)
	case kindPart:
		s.servePart(w, r, name, file)
	case kindMedia:
		s.serveMedia(w, r, name, file)
	default:
		http.NotFound(w, r)
	}
}
