// Package srt takes live streams over SRT, as field encoders and ffmpeg
// send them: MPEG-TS carrying H.264 and AAC, published with the stream ID
// "publish:APP/STREAM" (or the access-control form "#!::r=APP/STREAM,
// m=publish"), and plays them back as MPEG-TS to "read:APP/STREAM". SRT is
// github.com/datarhei/gosrt; MPEG-TS is demuxed and muxed with
// mediacommon.
package srt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/protocol/mpegts"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Hub is what the SRT server needs from the node's stream table.
type Hub interface {
	Publish(name streamname.Name, info stream.PublisherInfo) (*stream.Publisher, error)
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
	Admit(proto, remote string) (*hub.Place, error)
	StartSession(s hub.Session, kick func()) (id string, end func())
}

// Config configures the SRT server.
type Config struct {
	// Addr is the UDP address to listen on, e.g. ":8890".
	Addr string
	// MaxConnections bounds the SRT connections at once; more are refused
	// at the handshake (REJX_OVERLOAD). Zero: no limit.
	MaxConnections int
	// HandshakeTimeout bounds the time from a connection to its first
	// MPEG-TS program table. Defaults to 10s.
	HandshakeTimeout time.Duration
	// ReadTimeout closes a publisher that sends nothing for this long.
	// Defaults to 30s.
	ReadTimeout time.Duration
	// Latency is SRT's receive latency. Defaults to 120ms.
	Latency time.Duration
	// Auth admits publishers and players; nil admits all.
	Auth auth.Authorizer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server accepts SRT publishers.
type Server struct {
	cfg    Config
	hub    Hub
	log    *slog.Logger
	ln     gosrt.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	conns  atomic.Int64

	mu   sync.Mutex
	live map[gosrt.Conn]struct{}
}

// New builds a server publishing into h. Nothing listens until Start.
func New(cfg Config, h Hub) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.Latency <= 0 {
		cfg.Latency = 120 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, hub: h, log: cfg.Logger.With("component", "srt"), ctx: ctx, cancel: cancel, live: map[gosrt.Conn]struct{}{}}
}

// Start listens and accepts in the background.
func (s *Server) Start() error {
	c := gosrt.DefaultConfig()
	c.ReceiverLatency = s.cfg.Latency
	c.PeerLatency = s.cfg.Latency
	c.PeerIdleTimeout = s.cfg.ReadTimeout
	ln, err := gosrt.Listen("srt", s.cfg.Addr, c)
	if err != nil {
		return fmt.Errorf("srt: listen %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
	s.log.Info("srt listening", "addr", ln.Addr())
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, ends every connection and waits.
func (s *Server) Close() {
	s.cancel()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Lock()
	for c := range s.live {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		req, err := s.ln.Accept2()
		if err != nil {
			if errors.Is(err, gosrt.ErrListenerClosed) || s.ctx.Err() != nil {
				return
			}
			s.log.Debug("srt accept", "err", err)
			continue
		}
		s.admit(req)
	}
}

// admit decides on a connection request, by its stream ID and the
// publish credentials in it.
func (s *Server) admit(req gosrt.ConnRequest) {
	remote := req.RemoteAddr().String()
	mode, name, params, err := ParseStreamID(req.StreamId())
	if err != nil {
		s.log.Info("srt refused", "remote", remote, "err", err)
		req.Reject(gosrt.REJX_BAD_REQUEST)
		return
	}
	if req.IsEncrypted() {
		s.log.Info("srt refused: encrypted streams need a passphrase meshcast does not have", "remote", remote, "stream", name)
		req.Reject(gosrt.REJ_UNSECURE)
		return
	}
	if max := s.cfg.MaxConnections; max > 0 && s.conns.Load() >= int64(max) {
		s.log.Info("srt refused: too many connections", "remote", remote)
		req.Reject(gosrt.REJX_OVERLOAD)
		return
	}
	action := auth.Publish
	if mode == "read" {
		action = auth.Play
	}
	var grant auth.Grant
	if s.cfg.Auth != nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
		grant, err = s.cfg.Auth.Check(ctx, auth.Request{Action: action, Name: name, Params: params, Remote: auth.RemoteAddr(remote), Protocol: "srt"})
		cancel()
		if err != nil {
			s.log.Info(string(action)+" refused", append([]any{"remote", remote, "stream", name, "reason", err}, auth.Hint(err)...)...)
			req.Reject(gosrt.REJX_UNAUTHORIZED)
			return
		}
	}
	place, err := s.hub.Admit("srt", remote)
	if err != nil {
		s.log.Info(string(action)+" refused", "remote", remote, "stream", name, "reason", err)
		req.Reject(gosrt.REJX_OVERLOAD)
		return
	}
	var started bool // the place is the session's
	if mode == "read" {
		started = s.admitViewer(req, name, remote, place)
	} else {
		started = s.admitPublisher(req, name, remote, grant.Credential, place)
	}
	if !started {
		place.Release()
	}
}

// admitPublisher accepts a publisher of name and reports whether its
// session started, in place.
func (s *Server) admitPublisher(req gosrt.ConnRequest, name streamname.Name, remote, credential string, place *hub.Place) bool {
	pub, err := s.hub.Publish(name, stream.PublisherInfo{Protocol: "srt", RemoteAddr: remote, Credential: credential})
	if err != nil {
		s.log.Info("publish refused", "remote", remote, "stream", name, "err", err)
		reason := gosrt.REJX_ISE
		if errors.Is(err, hub.ErrBusy) {
			reason = gosrt.REJX_CONFLICT
		}
		req.Reject(reason)
		return false
	}
	conn, err := req.Accept()
	if err == nil && !s.track(conn) {
		err = errors.New("server closing")
	}
	if err != nil {
		pub.Close()
		s.log.Info("srt accept failed", "remote", remote, "err", err)
		return false
	}
	go s.publish(conn, pub, hub.Session{Kind: hub.KindPublish, Protocol: "srt", Stream: name, RemoteAddr: remote, Place: place})
	return true
}

// admitViewer accepts a viewer of a stream that plays here (or that the
// node can pull from another) and reports whether its session started, in
// place.
func (s *Server) admitViewer(req gosrt.ConnRequest, name streamname.Name, remote string, place *hub.Place) bool {
	rd, err := s.hub.NewReader(name, "srt")
	if err != nil {
		s.log.Info("play refused: no such stream", "remote", remote, "stream", name)
		req.Reject(gosrt.REJX_NOTFOUND)
		return false
	}
	conn, err := req.Accept()
	if err == nil && !s.track(conn) {
		err = errors.New("server closing")
	}
	if err != nil {
		rd.Close()
		s.log.Info("srt accept failed", "remote", remote, "err", err)
		return false
	}
	go s.play(conn, rd, hub.Session{Kind: hub.KindPlay, Protocol: "srt", Stream: name, RemoteAddr: remote, Place: place})
	return true
}

// track registers a connection, so Close ends it, unless the server is
// closing.
func (s *Server) track(conn gosrt.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		conn.Close()
		return false
	}
	s.live[conn] = struct{}{}
	s.conns.Add(1)
	s.wg.Add(1)
	return true
}

// publish reads a publisher's MPEG-TS into the stream until it leaves; sess
// is its session.
func (s *Server) publish(conn gosrt.Conn, pub *stream.Publisher, sess hub.Session) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.live, conn)
		s.mu.Unlock()
		s.conns.Add(-1)
	}()
	log := s.log.With("stream", sess.Stream, "remote", sess.RemoteAddr)
	_, endSession := s.hub.StartSession(sess, func() { conn.Close() })
	log.Info("publish started")
	wd := newWatchdog(conn, s.cfg.HandshakeTimeout)
	err := mpegts.Demux(wd, pub, func() { wd.setLimit(s.cfg.ReadTimeout) })
	wd.stop()
	conn.Close()
	pub.Close()
	endSession()
	switch {
	case wd.fired():
		log.Info("publish stopped: no data", "timeout", wd.limit())
	case err == nil || errors.Is(err, io.EOF):
		log.Info("publish stopped")
	default:
		log.Info("publish stopped", "err", err)
	}
}

// ParseStreamID reads an SRT stream ID: "publish:APP/STREAM" (also
// "read:", and a query such as "?key=KEY"), or the access-control form
// "#!::r=APP/STREAM,m=publish" (where any other key goes to the
// parameters). A bare "APP/STREAM" publishes.
func ParseStreamID(id string) (mode string, name streamname.Name, params url.Values, err error) {
	params = url.Values{}
	var path string
	switch {
	case strings.HasPrefix(id, "#!::"):
		mode = "request"
		for _, kv := range strings.Split(id[4:], ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "r":
				path = v
			case "m":
				mode = v
			case "":
			default:
				params.Set(k, v)
			}
		}
	default:
		mode = "publish"
		if m, rest, ok := strings.Cut(id, ":"); ok {
			mode, id = m, rest
		}
		path = id
	}
	if mode != "publish" && mode != "read" && mode != "request" {
		return "", "", nil, fmt.Errorf("stream ID mode %q: use publish or read", mode)
	}
	if mode == "request" {
		mode = "read"
	}
	path, query, _ := strings.Cut(path, "?")
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return "", "", nil, fmt.Errorf("stream ID query: %v", err)
		}
		for k, v := range q {
			params[k] = v
		}
	}
	app, key, ok := strings.Cut(path, "/")
	if !ok {
		return "", "", nil, fmt.Errorf("stream ID %q: want APP/STREAM", path)
	}
	name, err = streamname.New(app, key)
	if err != nil {
		return "", "", nil, err
	}
	return mode, name, params, nil
}
