package events

// The Socket.IO transport: the HTTP handler, client admission and the
// long-polling workaround.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/zishang520/socket.io/parsers/engine/v3/packet"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/meshcast/meshcast/internal/streamname"
)

var errTooMany = errors.New("too many clients")

// Handler serves the Socket.IO protocol; mount it at /socket.io/.
//
// It works around three faults of the library (v3.0.4):
//
//   - Closing a long-polling session leaves its pending poll unanswered.
//     Requests therefore reach the library with a context that Close ends
//     (and not the client going away: a client gone mid-poll is noticed at
//     the next write, a ping at the latest).
//   - A request context cancelled while a poll starts races with the
//     library's bookkeeping of that poll (the race detector reports it);
//     the same context avoids that.
//   - A poll's request is let go before the library has finished with it:
//     its final clean-up forgets whichever poll is current, so a client
//     polling again quickly enough loses its next poll and its session
//     ("polling write error"). The answer to a poll is therefore held
//     until the library reports the poll finished ("close" on its context,
//     watched through a middleware) and only then given to the client.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
		defer cancel()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		var held *heldResponse
		var finished chan struct{}
		if r.Method == http.MethodGet && r.URL.Query().Get("transport") == "polling" &&
			!strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			finished = make(chan struct{})
			ctx = context.WithValue(ctx, pollFinishedKey{}, finished)
			held = &heldResponse{w: w, header: make(http.Header)}
			w = held
		}
		r = r.WithContext(ctx)
		s.inflight[r] = cancel
		s.requests.Add(1)
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.inflight, r)
			s.mu.Unlock()
			s.requests.Done()
		}()
		s.engine.ServeHTTP(w, r)
		if held != nil {
			send := false
			select {
			case <-finished:
				// Unless Close ended the poll: then the library may be
				// writing still, and the client gets an empty answer.
				send = ctx.Err() == nil
			case <-time.After(pollFinishWait):
			}
			held.release(send)
		}
	})
}

// pollFinishWait bounds how long an answered poll waits for the library
// to finish with it; it takes microseconds.
const pollFinishWait = time.Second

// pollFinishedKey keys, in a poll's request context, the channel closed
// when the library has finished with the poll.
type pollFinishedKey struct{}

// watchPolls is an Engine.IO middleware: it closes a poll's channel when
// its context closes, after the library's last clean-up of it.
func watchPolls(ctx *types.HttpContext, next func(error)) {
	if ch, ok := ctx.Request().Context().Value(pollFinishedKey{}).(chan struct{}); ok {
		_ = ctx.Once("close", func(...any) { close(ch) })
	}
	next(nil)
}

// heldResponse keeps a poll's response until release, with headers of
// its own: nothing reaches the real ResponseWriter before then.
type heldResponse struct {
	w      http.ResponseWriter
	header http.Header

	mu       sync.Mutex
	status   int
	body     []byte
	released bool
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(code int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.status == 0 && !h.released {
		h.status = code
	}
}

func (h *heldResponse) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return 0, http.ErrHandlerTimeout
	}
	if h.status == 0 {
		h.status = http.StatusOK
	}
	h.body = append(h.body, p...)
	return len(p), nil
}

// release ends the holding; with send, what was written goes out.
func (h *heldResponse) release(send bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	if !send || h.status == 0 {
		return
	}
	for k, v := range h.header {
		h.w.Header()[k] = v
	}
	h.w.WriteHeader(h.status)
	h.w.Write(h.body)
}

// connect sets up a new socket: it is refused beyond MaxClients, and
// greeted with "hello" otherwise.
func (s *Server) connect(sock *socket.Socket) {
	c := &client{id: string(sock.Id()), sock: sock, rooms: make(map[streamname.Name]struct{})}
	sock.On("disconnect", func(...any) { s.disconnect(c) })
	s.mu.Lock()
	if s.closed || len(s.clients) >= s.cfg.MaxClients {
		s.mu.Unlock()
		sock.Disconnect(true)
		return
	}
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	if !sock.Connected() { // gone before it was added
		s.disconnect(c)
		return
	}

	// Count what waits to be written: a socket that stops reading is cut
	// off instead of queueing without bound.
	conn := sock.Conn()
	conn.On("packetCreate", func(...any) { c.backlog.Add(1) })
	conn.On("flush", func(args ...any) {
		if buf, ok := first(args).([]*packet.Packet); ok {
			c.backlog.Add(-int64(len(buf)))
		}
	})

	sock.On("join", func(args ...any) { s.onJoin(c, first(args)) })
	sock.On("leave", func(args ...any) { s.onLeave(c, first(args)) })
	sock.On("chat", func(args ...any) { s.onChat(c, first(args)) })
	sock.On("stats:subscribe", func(...any) { s.onStats(c, true) })
	sock.On("stats:unsubscribe", func(...any) { s.onStats(c, false) })

	s.deliver(c, "hello", mustJSON(hello{Node: s.cfg.Node, Version: s.cfg.Version, Streams: names(s.src.Streams())}))
}

// disconnect forgets a socket and its rooms.
func (s *Server) disconnect(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, c)
	for name := range c.rooms {
		s.leaveLocked(c, name)
	}
}
