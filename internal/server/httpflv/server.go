// Package httpflv is meshcast's HTTP-FLV endpoint: a live stream as one
// endless FLV file at http://HOST:PORT/APP/STREAM.flv.
package httpflv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
)

// Hub is what the HTTP-FLV server needs from the node's stream table.
type Hub interface {
	NewReader(name stream.Name, proto string) (*stream.Reader, error)
	Get(name stream.Name) *stream.Stream
}

// Config configures the HTTP-FLV server.
type Config struct {
	// WriteTimeout closes a viewer whose socket accepts nothing. Defaults to 10s.
	WriteTimeout time.Duration
	// MergeWindow is the least time between writes to a viewer (see
	// stream.PumpConfig). Defaults to 0: write at once.
	MergeWindow time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Format is the FLV tag wire form of packets, shared by all HTTP-FLV viewers.
var Format = stream.NewFormat("flv", func(p *media.Packet) []byte {
	return flv.AppendTag(make([]byte, 0, flv.TagSize(p)), p)
})

// Server serves live streams as HTTP-FLV.
type Server struct {
	cfg    Config
	hub    Hub
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
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
	return &Server{cfg: cfg, hub: hub, log: cfg.Logger.With("component", "httpflv"), ctx: ctx, cancel: cancel}
}

// Close ends every viewer's response and waits for them.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// header is the HTTP response head for a live FLV body. The body has no
// length: it ends when the stream ends and the connection closes.
const header = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: video/x-flv\r\n" +
	"Cache-Control: no-cache\r\n" +
	"Access-Control-Allow-Origin: *\r\n" +
	"Connection: close\r\n\r\n"

// ServeStream sends stream name as FLV until the stream ends or the viewer leaves.
func (s *Server) ServeStream(w http.ResponseWriter, r *http.Request, name stream.Name) {
	st := s.hub.Get(name)
	rd, err := s.hub.NewReader(name, "flv")
	if err != nil || st == nil {
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	defer rd.Close()
	in := st.Info()
	hasVideo, hasAudio := in.Video != nil || in.Audio == nil, in.Audio != nil || in.Video == nil
	log := s.log.With("stream", name, "remote", r.RemoteAddr)

	// Take over the connection so batches go out as one vectored write each;
	// behind HTTP/2 fall back to the ResponseWriter.
	var out stream.DeadlineWriter
	rc := http.NewResponseController(w)
	nc, brw, err := rc.Hijack()
	if err == nil {
		defer nc.Close()
		if brw.Reader.Buffered() > 0 {
			// A pipelined request behind this one: not supported with a live body.
			brw.Reader.Discard(brw.Reader.Buffered())
		}
		nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		head := append([]byte(header), flv.AppendHeader(nil, hasVideo, hasAudio)...)
		if _, err := nc.Write(head); err != nil {
			return
		}
		out = nc
	} else {
		w.Header().Set("Content-Type", "video/x-flv")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.WriteHeader(http.StatusOK)
		w.Write(flv.AppendHeader(nil, hasVideo, hasAudio))
		out = &flushWriter{w: w, rc: rc}
	}

	s.wg.Add(1)
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	if nc != nil {
		stop := context.AfterFunc(ctx, func() { nc.Close() }) // unblock a stuck write on shutdown
		defer stop()
		go watchClose(ctx, cancel, nc)
	} else {
		stop := context.AfterFunc(r.Context(), cancel)
		defer stop()
	}
	log.Info("play started")
	err = rd.Pump(ctx, Format, out, stream.PumpConfig{WriteTimeout: s.cfg.WriteTimeout, MergeWindow: s.cfg.MergeWindow})
	switch {
	case errors.Is(err, io.EOF):
		log.Info("play ended: stream ended")
	case errors.Is(err, stream.ErrSlowReader):
		log.Warn("play ended: viewer too slow")
	case ctx.Err() != nil:
		log.Debug("play ended")
	default:
		log.Info("play ended", "err", err)
	}
}

// watchClose cancels a viewer whose client hangs up, which would otherwise
// go unnoticed while the stream is quiet (e.g. waiting for its publisher).
func watchClose(ctx context.Context, cancel context.CancelFunc, nc net.Conn) {
	var b [64]byte
	for ctx.Err() == nil {
		if _, err := nc.Read(b[:]); err != nil {
			cancel()
			return
		}
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
