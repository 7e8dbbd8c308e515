package rtsp

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/headers"
	"github.com/bluenviron/gortsplib/v5/pkg/liberrors"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// handler takes one gortsplib server's requests (RTSP or RTSPS) to the
// Server. gortsplib calls a connection's hooks (OnConnOpen, OnDescribe,
// OnConnClose) from the connection's goroutine and a session's
// (OnAnnounce, OnSetup, OnPlay, OnRecord, OnSessionClose) from the
// session's, one request at a time.
//
// What may wait (the Authorizer's hook, a claim, a relay's lookup, the
// wait for a new stream's configuration) is done in DESCRIBE, ANNOUNCE
// and a session's first SETUP only: gortsplib's server loop hands a
// request that names a session to the session's goroutine and waits for
// it to take the request, so a session busy once its ID is out (after
// its first SETUP) would hold up every client of the server.
type handler struct {
	s      *Server
	rs     *gortsplib.Server
	secure bool
}

var (
	_ gortsplib.ServerHandlerOnConnOpen         = (*handler)(nil)
	_ gortsplib.ServerHandlerOnConnClose        = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSessionClose     = (*handler)(nil)
	_ gortsplib.ServerHandlerOnDescribe         = (*handler)(nil)
	_ gortsplib.ServerHandlerOnAnnounce         = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSetup            = (*handler)(nil)
	_ gortsplib.ServerHandlerOnPlay             = (*handler)(nil)
	_ gortsplib.ServerHandlerOnRecord           = (*handler)(nil)
	_ gortsplib.ServerHandlerOnResponse         = (*handler)(nil)
	_ gortsplib.ServerHandlerOnStreamWriteError = (*handler)(nil)
	_ gortsplib.ServerHandlerOnDecodeError      = (*handler)(nil)
	_ gortsplib.ServerHandlerOnPacketsLost      = (*handler)(nil)
)

// connState is what the server keeps of a connection.
type connState struct {
	c *conn // nil for a connection gortsplib made itself

	mu        sync.Mutex
	described *described // the last DESCRIBE's answer, until a SETUP takes it
}

// described is a stream as a DESCRIBE answered it: a SETUP on the same
// connection plays exactly that.
type described struct {
	path   string
	tracks *playTracks
	st     *gortsplib.ServerStream
}

// setDescribed keeps d for the connection's SETUP, closing the one it
// replaces.
func (cs *connState) setDescribed(d *described) {
	cs.mu.Lock()
	old := cs.described
	cs.described = d
	cs.mu.Unlock()
	if old != nil {
		old.st.Close()
	}
}

// takeDescribed hands the described stream of path over to a session.
func (cs *connState) takeDescribed(path string) *described {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	d := cs.described
	if d == nil || d.path != path {
		return nil
	}
	cs.described = nil
	return d
}

// stateOf is the server's state of a connection; nil for a tunnel (RTSP
// over HTTP or WebSocket), which is not served.
func stateOf(sc *gortsplib.ServerConn) *connState {
	if sc.Transport().Tunnel != gortsplib.TunnelNone {
		return nil
	}
	cs, _ := sc.UserData().(*connState)
	return cs
}

// remoteOf is the client's "IP:port".
func remoteOf(sc *gortsplib.ServerConn) string {
	return sc.NetConn().RemoteAddr().String()
}

// OnConnOpen takes a connection; RTSP over HTTP tunnels are refused.
func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	if ctx.Conn.Transport().Tunnel != gortsplib.TunnelNone {
		h.s.limited("tunnel", "rtsp connection refused: RTSP over HTTP is not served", "remote", remoteOf(ctx.Conn))
		ctx.Conn.Close()
		return
	}
	ctx.Conn.SetUserData(&connState{c: connOf(ctx.Conn.NetConn())})
}

// OnConnClose drops what the connection described and no session took.
func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	if cs := stateOf(ctx.Conn); cs != nil {
		cs.setDescribed(nil)
	}
}

// OnSessionClose ends a session's playing or publishing: gortsplib calls
// it once for every session, however it ends.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if sess, ok := ctx.Session.UserData().(*session); ok {
		sess.close(ctx.Error)
	}
}

// OnSetup answers SETUP: a publisher's tracks after its ANNOUNCE, or a
// viewer's (playSetup).
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	sess, _ := ctx.Session.UserData().(*session)
	switch ctx.Session.State() {
	case gortsplib.ServerSessionStatePreRecord:
		if sess == nil || sess.pub == nil {
			return refuse(base.StatusBadRequest, "ANNOUNCE first"), nil, nil
		}
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	case gortsplib.ServerSessionStatePrePlay:
		if sess == nil || sess.play == nil {
			return refuse(base.StatusBadRequest, "no stream set up"), nil, nil
		}
		return &base.Response{StatusCode: base.StatusOK}, sess.play.st, nil
	}
	return h.playSetup(ctx)
}

// OnResponse starts a viewer's packets once its PLAY answer is on its way
// (gortsplib calls it for every answer, before writing it).
func (h *handler) OnResponse(sc *gortsplib.ServerConn, res *base.Response) {
	if res.StatusCode != base.StatusOK {
		return
	}
	if ss := sc.Session(); ss != nil {
		if sess, ok := ss.UserData().(*session); ok && sess.play != nil {
			sess.play.answered()
		}
	}
}

// OnStreamWriteError counts a viewer's packets its full queue refused.
func (h *handler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if sess, ok := ctx.Session.UserData().(*session); ok && sess.play != nil {
		sess.play.overflows.Add(1)
	}
}

// OnDecodeError logs a publisher's damaged packets, at most once a second.
func (h *handler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	h.s.limited("decode-error", "rtsp: damaged packet dropped", "err", ctx.Error)
}

// OnPacketsLost logs a publisher's lost packets, at most once a second.
func (h *handler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	h.s.limited("packets-lost", "rtsp: packets lost", "lost", ctx.Lost)
}

// session is what the server holds for a viewer's or a publisher's RTSP
// session; close releases it all.
type session struct {
	s       *Server
	rs      *gortsplib.ServerSession
	name    streamname.Name
	remote  string
	log     *slog.Logger
	place   *hub.Place // its place under the hub's sessions per address
	end     func()     // ends the hub session, once started
	started bool       // playing or publishing

	play *player // a viewer's

	pub        *stream.Publisher // a publisher's
	in         *ingest
	pl         *plan
	transcoder bool // holds one of MaxTranscoders
}

// close releases a session's reader or publisher, place and hub session.
func (sess *session) close(why error) {
	if sess.play != nil {
		sess.play.stop()
	}
	if sess.in != nil {
		sess.in.close()
	}
	if sess.pub != nil {
		sess.pub.Close()
	}
	if sess.transcoder {
		sess.s.transcoders.Add(-1)
	}
	if sess.end != nil {
		sess.end()
	}
	sess.place.Release()
	sess.s.dropSession()
	if sess.started {
		kind := "play"
		if sess.pub != nil {
			kind = "publish"
		}
		sess.log.Info(kind+" stopped", "reason", reason(why))
	}
}

// reason says why a session ended, for its log line.
func reason(err error) string {
	switch err.(type) {
	case nil:
		return "closed"
	case liberrors.ErrServerSessionTornDown:
		return "teardown"
	case liberrors.ErrServerTerminated:
		return "server closing"
	case liberrors.ErrServerSessionTimedOut:
		return "timeout"
	case liberrors.ErrServerSessionNotInUse:
		return "connection closed"
	}
	return err.Error()
}

// authorize asks the Authorizer, within the handshake timeout.
func (s *Server) authorize(action auth.Action, name streamname.Name, params map[string][]string, remote string) (auth.Grant, error) {
	if s.cfg.Auth == nil {
		return auth.Grant{}, nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	return s.cfg.Auth.Check(ctx, auth.Request{Action: action, Name: name, Params: params, Remote: auth.RemoteAddr(remote), Protocol: Protocol})
}

// refused answers an Authorizer's refusal with its status (401, 403,
// 410) and reason. A publisher that gave no credentials is asked for the
// key as a Basic password; one whose credentials were refused is
// disconnected (gortsplib closes the connection on ErrServerAuth).
func refused(err error, publish, given bool) (*base.Response, error) {
	why := err.Error()
	if publish && errors.Is(err, auth.ErrKeyRequired) {
		why = "publishing needs a key: add ?key=KEY to the URL, or give the key as the password"
	}
	res := refuse(base.StatusCode(auth.StatusOf(err)), why)
	if !publish {
		return res, nil
	}
	if given {
		return res, liberrors.ErrServerAuth{}
	}
	if res.StatusCode == base.StatusUnauthorized {
		res.Header = base.Header{"WWW-Authenticate": headers.Authenticate{Method: headers.AuthMethodBasic, Realm: "meshcast"}.Marshal()}
	}
	return res, nil
}

// refuse is an answer with a status and its reason, which clients show
// (ffmpeg: "method ANNOUNCE failed: 401 Unauthorized: ...").
func refuse(code base.StatusCode, why string) *base.Response {
	why = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, why)
	text := http.StatusText(int(code))
	switch code {
	case base.StatusNotEnoughBandwidth:
		text = "Not Enough Bandwidth"
	case base.StatusMethodNotValidInThisState:
		text = "Method Not Valid In This State"
	}
	if text != "" {
		why = text + ": " + why
	}
	return &base.Response{StatusCode: code, StatusMessage: why}
}
