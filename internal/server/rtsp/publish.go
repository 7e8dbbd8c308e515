package rtsp

import (
	"errors"
	"fmt"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/stream"
)

// OnAnnounce admits a publisher as RTMP does (the key in the URL's query,
// ?key=KEY, or as the password of Basic authentication), takes its place
// and the stream, and chooses the tracks to take from its SDP.
func (h *handler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	s := h.s
	if stateOf(ctx.Conn) == nil {
		return refuse(base.StatusBadRequest, "tunnels are not served"), nil
	}
	remote := remoteOf(ctx.Conn)
	name, params, err := ParsePath(ctx.Path, ctx.Query)
	if err != nil {
		return refuse(base.StatusBadRequest, err.Error()), nil
	}
	params, given := withPassword(params, ctx.Request)
	grant, err := s.authorize(auth.Publish, name, params, remote)
	if err != nil {
		s.log.Info("publish refused", append([]any{"remote", remote, "stream", name, "reason", err}, auth.Hint(err)...)...)
		return refused(err, true, given)
	}
	pl, transcoder, err := s.planPublish(ctx.Description)
	if err != nil {
		s.log.Info("publish refused", "remote", remote, "stream", name, "reason", err)
		return refuse(base.StatusUnsupportedMediaType, err.Error()), nil
	}
	release := func() {
		if transcoder {
			s.transcoders.Add(-1)
		}
	}
	if !s.takeSession() {
		release()
		s.limited("max-sessions", "publish refused: too many sessions", "remote", remote, "stream", name)
		return refuse(base.StatusServiceUnavailable, "too many sessions"), nil
	}
	place, err := s.hub.Admit(Protocol, remote)
	if err != nil {
		release()
		s.dropSession()
		s.log.Info("publish refused", "remote", remote, "stream", name, "reason", err)
		return refuse(base.StatusNotEnoughBandwidth, err.Error()), nil
	}
	pub, err := s.hub.Publish(name, stream.PublisherInfo{Protocol: Protocol, RemoteAddr: remote, Credential: grant.Credential})
	if err != nil {
		release()
		place.Release()
		s.dropSession()
		s.log.Info("publish refused", "remote", remote, "stream", name, "reason", err)
		code := base.StatusServiceUnavailable
		if errors.Is(err, hub.ErrBusy) {
			code = base.StatusForbidden
		}
		return refuse(code, err.Error()), nil
	}
	log := s.log.With("stream", name, "remote", remote, "tls", h.secure)
	ctx.Session.SetUserData(&session{s: s, rs: ctx.Session, name: name, remote: remote, log: log, place: place, pub: pub, pl: pl, transcoder: transcoder})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnRecord starts a publisher's session: its RTP goes to the stream.
func (h *handler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	s := h.s
	sess, _ := ctx.Session.UserData().(*session)
	if sess == nil || sess.pub == nil {
		return refuse(base.StatusMethodNotValidInThisState, "ANNOUNCE first"), nil
	}
	if cs := stateOf(ctx.Conn); cs != nil && !cs.c.started() {
		return refuse(base.StatusRequestTimeout, "handshake timeout"), nil
	}
	rs := ctx.Session
	in, err := newIngest(sess.pl, sess.pub, rs.PacketPTS, s.ffmpeg, sess.log, func(err error) {
		sess.log.Info("publish ending", "reason", err)
		rs.Close()
	})
	if err != nil {
		return refuse(base.StatusUnsupportedMediaType, err.Error()), nil
	}
	sess.in = in
	in.attach(rs.OnPacketRTP)
	if err := in.start(s.ctx); err != nil {
		return refuse(base.StatusInternalServerError, err.Error()), nil
	}
	sess.started = true
	_, sess.end = s.hub.StartSession(hub.Session{Kind: hub.KindPublish, Protocol: Protocol, Stream: sess.name, RemoteAddr: sess.remote, Place: sess.place}, rs.Close)
	args := []any{"tracks", sess.pl.String(), "transport", rs.Transport().Protocol.String()}
	if len(sess.pl.skipped) > 0 {
		args = append(args, "not_taken", sess.pl.skipped)
	}
	sess.log.Info("publish started", args...)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// planPublish chooses the tracks to take from a publisher's SDP, and
// reserves a transcoder for its Opus (transcoder: one was reserved).
func (s *Server) planPublish(desc *description.Session) (pl *plan, transcoder bool, err error) {
	noOpus := ""
	if s.ffmpeg == "" {
		noOpus = "no ffmpeg to transcode it to AAC"
	}
	if pl, err = planIngest(desc, noOpus); err != nil || !pl.opus() {
		return pl, false, err
	}
	if s.transcoders.Add(1) <= int64(s.cfg.MaxTranscoders) {
		return pl, true, nil
	}
	s.transcoders.Add(-1)
	pl, err = planIngest(desc, fmt.Sprintf("all %d transcoders busy", s.cfg.MaxTranscoders))
	return pl, false, err
}
