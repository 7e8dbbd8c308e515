// Package httpflv is meshcast's HTTP-FLV endpoint: a live stream as one
// endless FLV file at http://HOST:PORT/APP/STREAM.flv.
package httpflv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/rawio"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Hub is what the HTTP-FLV server needs from the node's stream table.
type Hub interface {
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
	NewReaderVia(name streamname.Name, proto string, via []string) (*stream.Reader, error)
	Get(name streamname.Name) *stream.Stream
	Admit(proto, remote string) (*hub.Place, error)
	StartSession(s hub.Session, kick func()) (id string, end func())
}

// Config configures the HTTP-FLV server.
type Config struct {
	// WriteTimeout closes a viewer whose socket accepts nothing. Defaults to 10s.
	WriteTimeout time.Duration
	// MergeWindow is the least time between writes to a viewer (see
	// stream.PumpConfig). Defaults to 0: write at once.
	MergeWindow time.Duration
	// Nagle turns TCP_NODELAY off on viewers' sockets (see
	// stream.PumpConfig). Defaults to false.
	Nagle bool
	// Sender writes to viewers; servers may share one. Defaults to a sender
	// of the server's own, closed with it.
	Sender *egress.Sender
	// AllowOrigin decides which pages may open WebSocket-FLV connections,
	// by their Origin header. Nil allows same-origin pages only.
	AllowOrigin func(origin string) bool
	// Auth admits players; nil admits everybody.
	Auth auth.Authorizer
	// Peers checks that a relay pull comes from another node of the
	// cluster (cluster.PeerClient); nil refuses every pull.
	Peers Peers
	// Self names this node, to refuse pulls that passed it already (see
	// cluster.ParseVia); nil: pulls are not checked for circles.
	Self func() cluster.NodeID
	// Path returns the nodes a stream relayed here comes through
	// (cluster.Relays.Path), to refuse pulls from them; nil: none.
	Path func(streamname.Name) []cluster.NodeID
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Peers checks requests from other nodes of the cluster.
type Peers interface {
	Verify(r *http.Request) (cluster.NodeID, error)
}

var _ Peers = (*cluster.PeerClient)(nil)

// Format is the FLV tag wire form of packets, shared by all HTTP-FLV viewers.
var Format = stream.NewFormat("flv", func(p *media.Packet) []byte {
	return flv.AppendTag(make([]byte, 0, flv.TagSize(p)), p)
})

// Server serves live streams as HTTP-FLV.
type Server struct {
	cfg       Config
	hub       Hub
	log       *slog.Logger
	sender    *egress.Sender
	ownSender bool
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex           // Close cancels ctx under it; begin adds to wg under it
	wg        sync.WaitGroup       // the plays under way
	logs      connlimit.LogLimiter // refusals: at most one line a second
}

// New creates an HTTP-FLV server.
func New(cfg Config, hub Hub) *Server {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, hub: hub, log: cfg.Logger.With("component", "httpflv"), sender: cfg.Sender, ctx: ctx, cancel: cancel}
	if s.sender == nil {
		s.sender, s.ownSender = egress.NewSender(0), true
	}
	return s
}

// Close ends every viewer's response and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
	if s.ownSender {
		s.sender.Close()
	}
}

// begin counts a play that starts, or reports false once Close has begun:
// Close waits for every play it counted, and a play it did not count must
// not start.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	return true
}

// header is the HTTP response head for a live FLV body. The body has no
// length: it ends when the stream ends and the connection closes.
const header = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: video/x-flv\r\n" +
	"Cache-Control: no-cache\r\n" +
	"Connection: close\r\n"

// appendHead appends the response head of a taken-over connection: header,
// the CORS headers set on h (by the node's CORS policy) and meshcast's own
// (a relay's path), and the blank line.
func appendHead(b []byte, h http.Header) []byte {
	b = append(b, header...)
	for k, vs := range h {
		if !strings.HasPrefix(k, "Access-Control-") && !strings.HasPrefix(k, "X-Meshcast-") && k != "Vary" {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...)
}

// ServeStream sends stream name as FLV until the stream ends or the viewer leaves.
func (s *Server) ServeStream(w http.ResponseWriter, r *http.Request, name streamname.Name) {
	s.serve(w, r, name, "flv", nil, nil)
}

// ServePull sends stream name as FLV to another node relaying it (reader
// protocol proto), followed by end when the stream ends here. via lists
// the nodes the pull passed, the puller last (see hub.NewReaderVia).
func (s *Server) ServePull(w http.ResponseWriter, r *http.Request, name streamname.Name, proto string, end []byte, via []string) {
	s.serve(w, r, name, proto, end, via)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, name streamname.Name, proto string, end []byte, via []string) {
	if proto == "flv" && websocket.IsWebSocketUpgrade(r) {
		s.serveWebSocket(w, r, name)
		return
	}
	// A viewer takes its place before its reader, which may start a relay
	// pull; other nodes' pulls are not limited.
	var place *hub.Place
	if proto == "flv" {
		var err error
		if place, err = s.hub.Admit(proto, r.RemoteAddr); err != nil {
			s.refuse(w, r, name, err)
			return
		}
	}
	rd, err := s.hub.NewReaderVia(name, proto, via)
	if err != nil {
		place.Release()
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	if proto == hub.RelayProtocol && r.Header.Get(cluster.HeaderHistory) != "" {
		rd.Rewind() // a relay's first pull: the recent past, for its muxers
	}
	st := s.hub.Get(name)
	if st == nil {
		rd.Close()
		place.Release()
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	keep := false // the reader is handed to the sender, the place to the session
	defer func() {
		if !keep {
			rd.Close()
			place.Release()
		}
	}()
	in := st.Info()
	hasVideo, hasAudio := in.Video != nil || in.Audio == nil, in.Audio != nil || in.Video == nil
	log := s.log.With("stream", name, "remote", r.RemoteAddr)

	// Take over the connection and hand it to the sender, which writes
	// batches as one vectored write each and needs no goroutine per viewer;
	// behind HTTP/2 pump through the ResponseWriter instead.
	pcfg := stream.PumpConfig{WriteTimeout: s.cfg.WriteTimeout, MergeWindow: s.cfg.MergeWindow, Nagle: s.cfg.Nagle}
	if proto == hub.RelayProtocol {
		// A link to another node is written as each packet is appended,
		// with Nagle off, whatever this node's viewers get: that node's
		// viewers wait for their own merge window, and a tier of relays
		// then costs milliseconds, not a window each.
		pcfg.MergeWindow, pcfg.Nagle = 0, false
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		defer s.session(r, proto, name, place, cancel)()
		s.pumpResponse(ctx, w, r, rd, hasVideo, hasAudio, pcfg, log)
		return
	}
	// A pipelined request behind this one cannot be answered after a live body.
	brw.Reader.Discard(brw.Reader.Buffered())
	// The first picture (decoder configuration and keyframe) leaves with
	// the response head: one write, no wait for the sender.
	first, err := rd.Ready(Format)
	if err == nil {
		nc.SetDeadline(time.Now().Add(s.cfg.WriteTimeout))
		head := flv.AppendHeader(appendHead(nil, w.Header()), hasVideo, hasAudio)
		_, err = rawio.WriteBuffers(nc, append([][]byte{head}, first...))
	}
	if err == nil {
		err = nc.SetDeadline(time.Time{})
	}
	if err != nil {
		nc.Close()
		return
	}
	if !s.begin() {
		nc.Close()
		return
	}
	keep = true
	log.Info("play started")
	// finish ends the play: the end tag after the stream's end, then the
	// connection.
	finish := func(err error) {
		rd.Close()
		if errors.Is(err, io.EOF) && end != nil {
			nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			nc.Write(end)
		}
		nc.Close()
		logEnd(log, err)
	}
	if proto == hub.RelayProtocol {
		// Another node's pull is written from a goroutine of its own,
		// which sends a keep-alive whenever the stream has had nothing to
		// send for a second: the puller takes a silent link for a dead
		// one and finds another path (cluster.SilenceTimeout).
		go func() {
			defer s.wg.Done()
			finish(s.pumpPull(rd, nc, pcfg))
		}()
		return
	}
	endSession := s.session(r, proto, name, place, func() { nc.Close() })
	s.sender.Send(s.ctx, rd, Format, nc, pcfg, func(err error) {
		defer s.wg.Done()
		defer endSession()
		finish(err)
	})
}

// pumpPull writes rd's stream to another node's pull on nc until it ends,
// the puller hangs up (a write fails), or the server closes, with
// cluster.KeepAliveTag after each cluster.KeepAliveEvery without a write.
func (s *Server) pumpPull(rd *stream.Reader, nc net.Conn, cfg stream.PumpConfig) error {
	wrote := false
	cfg.Sent = func(n int64) {
		wrote = wrote || n > 0
		s.sender.Count(n)
	}
	keepAlive := cluster.KeepAliveTag()
	for {
		ctx, cancel := context.WithTimeout(s.ctx, cluster.KeepAliveEvery)
		err := rd.Pump(ctx, Format, nc, cfg)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || s.ctx.Err() != nil {
			return err
		}
		if wrote {
			wrote = false
			continue
		}
		nc.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
		n, err := nc.Write(keepAlive)
		s.sender.Count(int64(n))
		if err != nil {
			return fmt.Errorf("keep-alive: %w", err)
		}
	}
}

// session records a viewer's playback (proto "flv" or "ws-flv") as a
// session in place; kick ends it. Other nodes' pulls are no sessions: their
// end does nothing.
func (s *Server) session(r *http.Request, proto string, name streamname.Name, place *hub.Place, kick func()) (end func()) {
	if proto != "flv" && proto != "ws-flv" {
		return func() {}
	}
	_, end = s.hub.StartSession(hub.Session{Kind: hub.KindPlay, Protocol: proto, Stream: name, RemoteAddr: r.RemoteAddr, Place: place}, kick)
	return end
}

// refuse answers a viewer refused by the per-address sessions limit.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, name streamname.Name, err error) {
	s.logs.Log(s.log, slog.LevelInfo, "viewers-per-ip", "play refused", "stream", name, "remote", r.RemoteAddr, "reason", err)
	http.Error(w, err.Error(), http.StatusTooManyRequests)
}

// pumpResponse writes the stream through w from the handler's goroutine,
// for connections that cannot be taken over (HTTP/2), until ctx ends.
func (s *Server) pumpResponse(ctx context.Context, w http.ResponseWriter, r *http.Request, rd *stream.Reader, hasVideo, hasAudio bool, cfg stream.PumpConfig, log *slog.Logger) {
	w.Header().Set("Content-Type", "video/x-flv")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write(flv.AppendHeader(nil, hasVideo, hasAudio))
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	log.Info("play started")
	logEnd(log, rd.Pump(ctx, Format, &flushWriter{w: w, rc: http.NewResponseController(w)}, cfg))
}

// logEnd logs why a viewer's playback ended.
func logEnd(log *slog.Logger, err error) {
	switch {
	case errors.Is(err, io.EOF):
		log.Info("play ended: stream ended")
	case errors.Is(err, stream.ErrSlowReader):
		log.Warn("play ended: viewer too slow")
	case errors.Is(err, egress.ErrHungUp):
		log.Info("play ended: viewer left")
	case errors.Is(err, context.Canceled):
		log.Info("play ended: session closed")
	default:
		log.Info("play ended", "err", err)
	}
}

// flushWriter adapts an http.ResponseWriter for stream.Reader.Pump.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, f.rc.Flush()
}

func (f *flushWriter) SetWriteDeadline(t time.Time) error { return f.rc.SetWriteDeadline(t) }
