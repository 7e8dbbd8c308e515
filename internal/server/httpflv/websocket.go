package httpflv

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// maxWSRead bounds what a WebSocket-FLV viewer may send: it has nothing to
// say beyond control frames.
const maxWSRead = 4096

// serveWebSocket sends stream name as FLV over a WebSocket (ws://HOST/APP/
// STREAM.flv, as mpegts.js and flv.js play it): the FLV header, then the
// tags, in binary messages, until the stream ends or the viewer leaves.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, name streamname.Name) {
	place, err := s.hub.Admit("ws-flv", r.RemoteAddr)
	if err != nil {
		s.refuse(w, r, name, err)
		return
	}
	started := false // the place is the session's
	defer func() {
		if !started {
			place.Release()
		}
	}()
	rd, err := s.hub.NewReader(name, "flv")
	if err != nil {
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	defer rd.Close()
	st := s.hub.Get(name)
	if st == nil {
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.WriteTimeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  64 << 10,
		CheckOrigin:      s.checkOrigin,
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
	conn.SetReadLimit(maxWSRead)

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// Read, to answer pings and notice the close; anything else ends it.
	go func() {
		defer cancel()
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	in := st.Info()
	hasVideo, hasAudio := in.Video != nil || in.Audio == nil, in.Audio != nil || in.Video == nil
	conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := conn.WriteMessage(websocket.BinaryMessage, flv.AppendHeader(nil, hasVideo, hasAudio)); err != nil {
		return
	}
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	started = true
	defer s.session(r, "ws-flv", name, place, cancel)()
	log := s.log.With("stream", name, "remote", r.RemoteAddr)
	log.Info("play started", "transport", "websocket")
	err = rd.Pump(ctx, Format, wsWriter{conn}, stream.PumpConfig{WriteTimeout: s.cfg.WriteTimeout, MergeWindow: s.cfg.MergeWindow})
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "stream ended"), time.Now().Add(time.Second))
	logEnd(log, err)
}

// checkOrigin admits a page's WebSocket: same-origin always, others as
// AllowOrigin says.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	if u, err := url.Parse(origin); err == nil && u.Host == r.Host {
		return true
	}
	return s.cfg.AllowOrigin != nil && s.cfg.AllowOrigin(origin)
}

// wsWriter writes each batch of FLV tags as one binary message.
type wsWriter struct{ c *websocket.Conn }

func (w wsWriter) Write(p []byte) (int, error) {
	if err := w.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w wsWriter) SetWriteDeadline(t time.Time) error { return w.c.SetWriteDeadline(t) }
