// Package rtmp is meshcast's RTMP endpoint: publishers push streams in and
// players pull them out, at rtmp://HOST:PORT/APP/STREAM.
package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Hub is what the RTMP server needs from the node's stream table.
type Hub interface {
	Publish(streamname.Name, stream.PublisherInfo) (*stream.Publisher, error)
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
	Admit(proto, remote string) (*hub.Place, error)
	StartSession(s hub.Session, kick func()) (id string, end func())
}

// Config configures the RTMP server.
type Config struct {
	// Addr is the listen address. Defaults to ":1935".
	Addr string
	// ReadTimeout closes a handshake, an idle command phase or a silent
	// publisher. Defaults to 30s.
	ReadTimeout time.Duration
	// WriteTimeout closes a player whose socket accepts nothing. Defaults to 10s.
	WriteTimeout time.Duration
	// MergeWindow is the least time between writes to a player (see
	// stream.PumpConfig). Defaults to 0: write at once.
	MergeWindow time.Duration
	// Nagle turns TCP_NODELAY off on players' sockets (see
	// stream.PumpConfig). Defaults to false.
	Nagle bool
	// Sender writes to players; several servers may share one. Defaults to
	// a sender of the server's own, closed with it.
	Sender *egress.Sender
	// MaxConnections caps concurrent connections. Defaults to 10000.
	MaxConnections int
	// MaxConnectionsPerIP caps the connections of one client address
	// (the client's from the PROXY protocol header behind a trusted
	// proxy) that wait to publish or play: each counts once it has waited
	// connlimit.Grace(HandshakeTimeout) since it was accepted, until its
	// session starts. Publishers and players do not count. Defaults to 0:
	// no limit.
	MaxConnectionsPerIP int
	// HandshakeTimeout is how long a connection has from being accepted
	// to publishing or playing: the handshake and the command phase.
	// Defaults to 10s.
	HandshakeTimeout time.Duration
	// TrustedProxies are load balancers whose connections may start with
	// a PROXY protocol header giving the client's address. Defaults to none.
	TrustedProxies []netip.Prefix
	// Auth admits publishers and players; nil admits everybody.
	Auth auth.Authorizer
	// TLSConfig, if set, makes the server RTMPS: every connection (after
	// its PROXY protocol header, if any) starts with a TLS handshake, which
	// must finish within ReadTimeout.
	TLSConfig *tls.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// playChunkSize is the outgoing chunk size of every session; the shared wire
// form of packets is chunked with it.
const playChunkSize = 4096

// playStreamID is the message stream ID createStream hands out. One fixed ID
// lets every player share the same bytes for a packet.
const playStreamID = 1

// Format is the RTMP play wire form of packets, shared by all RTMP players.
var Format = stream.NewFormat("rtmp", encode)

func encode(p *media.Packet) []byte {
	body := flv.AppendBody(make([]byte, 0, flv.BodySize(p)), p)
	csid := rtmp.CSIDVideo
	switch p.Kind {
	case media.KindAudio:
		csid = rtmp.CSIDAudio
	case media.KindData:
		csid = rtmp.CSIDData
	}
	ts := uint32(p.DTS)
	out := make([]byte, 0, rtmp.MessageSize(csid, ts, len(body), playChunkSize))
	return rtmp.AppendMessage(out, csid, flv.TagType(p), playStreamID, ts, body, playChunkSize)
}

// Server accepts RTMP connections.
type Server struct {
	cfg       Config
	hub       Hub
	log       *slog.Logger
	sender    *egress.Sender
	ownSender bool

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Uint64
	active atomic.Int64

	limits limits

	mu    sync.Mutex
	conns map[net.Conn]*connlimit.Slot // its place under MaxConnectionsPerIP, if any
}

// New creates a server; Start binds it.
func New(cfg Config, hub Hub) *Server {
	if cfg.Addr == "" {
		cfg.Addr = ":1935"
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 10000
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, hub: hub, conns: make(map[net.Conn]*connlimit.Slot), sender: cfg.Sender}
	s.log = cfg.Logger.With("component", s.proto())
	s.limits.perIP = connlimit.NewPerIP(cfg.MaxConnectionsPerIP)
	if s.sender == nil {
		s.sender, s.ownSender = egress.NewSender(0), true
	}
	return s
}

// Start binds the listen address and accepts connections until Close.
func (s *Server) Start(ctx context.Context) error {
	// No TCP keep-alive: a session's reads and writes have deadlines, which
	// find a vanished peer sooner, and a burst of joins saves four socket
	// options per connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rtmp: listen: %w", err)
	}
	s.ln = ln
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go s.accept()
	return nil
}

// proto names the server's protocol: "rtmps" over TLS, else "rtmp".
func (s *Server) proto() string {
	if s.cfg.TLSConfig != nil {
		return "rtmps"
	}
	return "rtmp"
}

// Connections returns the number of open RTMP connections.
func (s *Server) Connections() int { return int(s.active.Load()) }

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, closes every connection and waits for them.
func (s *Server) Close() error {
	if s.ownSender {
		defer s.sender.Close()
	}
	if s.ln == nil {
		return nil
	}
	s.cancel()
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		if s.active.Add(1) > int64(s.cfg.MaxConnections) {
			s.active.Add(-1)
			s.limits.refusedTotal.Add(1)
			s.limits.logs.Log(s.log, slog.LevelWarn, "max-connections", "connection refused: limit reached", "remote", nc.RemoteAddr().String(), "max", s.cfg.MaxConnections)
			nc.Close()
			continue
		}
		accepted := time.Now()
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			nc.Close()
			s.active.Add(-1)
			return
		}
		s.conns[nc] = nil
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			conn, err := s.unproxy(nc, accepted.Add(s.cfg.HandshakeTimeout))
			if err != nil {
				level := slog.LevelInfo
				if silent(err) {
					level = slog.LevelDebug // a proxy's health check
				}
				s.log.Log(s.ctx, level, "connection from a proxy closed: no valid PROXY protocol header", "remote", nc.RemoteAddr().String(), "err", err)
				s.release(nc)
				return
			}
			slot, ok := s.admit(nc, conn)
			if !ok {
				s.release(nc)
				return
			}
			if conn, err = s.secure(conn); err != nil {
				s.release(nc)
				return
			}
			if playing := newConn(s, nc, conn, accepted, slot).serve(); !playing {
				s.release(nc)
			}
		}()
	}
}

// release closes a connection and forgets it: when its session ends, or
// when the sender is done with a player.
func (s *Server) release(nc net.Conn) {
	nc.Close()
	s.mu.Lock()
	slot := s.conns[nc]
	delete(s.conns, nc)
	s.mu.Unlock()
	slot.Leave()
	s.active.Add(-1)
	s.wg.Done()
}
