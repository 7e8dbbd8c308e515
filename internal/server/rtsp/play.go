package rtsp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/pion/rtp"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Limits of a viewer's session.
const (
	// answerWait bounds the wait, after PLAY, for its answer to leave.
	answerWait = 5 * time.Second
	// catchUp is how much faster than real time the backlog a viewer
	// gets on joining (the GOP so far) leaves: a burst of a whole GOP
	// would overflow UDP receive buffers.
	catchUp = 4
	// maxPaceWait is the longest pause pacing makes; a longer one is a
	// jump in the stream's timeline, which pacing starts over from.
	maxPaceWait = time.Second
	// maxOverflows ends a viewer whose queue overflowed this many times
	// within overflowWindow: its connection cannot carry the stream.
	maxOverflows   = 3
	overflowWindow = time.Minute
)

// Payload types of the tracks a viewer gets.
const (
	videoPayloadType = 96
	audioPayloadType = 97
)

var (
	errNotLive = errors.New("stream not live")
	errNoMedia = errors.New("the stream has no H.264, HEVC, AV1 or AAC yet")
)

// OnDescribe answers DESCRIBE with the stream's tracks, waiting briefly
// for its decoder configuration if it has just started. The connection's
// SETUP plays exactly what is described.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	cs := stateOf(ctx.Conn)
	if cs == nil {
		return refuse(base.StatusBadRequest, "tunnels are not served"), nil, nil
	}
	d, res := h.describe(ctx.Path, ctx.Query, remoteOf(ctx.Conn))
	if res != nil {
		return res, nil, nil
	}
	cs.setDescribed(d)
	return &base.Response{StatusCode: base.StatusOK}, d.st, nil
}

// describe authorizes a viewer of path and describes its stream, or
// answers why not.
func (h *handler) describe(path, query, remote string) (*described, *base.Response) {
	s := h.s
	name, params, err := ParsePath(path, query)
	if err != nil {
		return nil, refuse(base.StatusBadRequest, err.Error())
	}
	if _, err := s.authorize(auth.Play, name, params, remote); err != nil {
		s.log.Info("play refused", "remote", remote, "stream", name, "reason", err)
		res, _ := refused(err, false, false)
		return nil, res
	}
	tr, err := s.probe(name)
	if err != nil {
		s.log.Debug("describe: no stream", "remote", remote, "stream", name, "err", err)
		return nil, refuse(base.StatusNotFound, err.Error())
	}
	st := &gortsplib.ServerStream{Server: h.rs, Desc: tr.desc}
	if err := st.Initialize(); err != nil {
		return nil, refuse(base.StatusInternalServerError, err.Error())
	}
	return &described{path: path, tracks: tr, st: st}, nil
}

// playSetup answers a viewer's first SETUP: the stream the connection
// described (else it is authorized and described now), a place under the
// hub's sessions per address, and the session's reader.
func (h *handler) playSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := h.s
	cs := stateOf(ctx.Conn)
	if cs == nil {
		return refuse(base.StatusBadRequest, "tunnels are not served"), nil, nil
	}
	remote := remoteOf(ctx.Conn)
	name, _, err := ParsePath(ctx.Path, ctx.Query)
	if err != nil {
		return refuse(base.StatusBadRequest, err.Error()), nil, nil
	}
	d := cs.takeDescribed(ctx.Path)
	if d == nil {
		s.log.Debug("setup without describe", "remote", remote, "stream", name)
		var res *base.Response
		if d, res = h.describe(ctx.Path, ctx.Query, remote); res != nil {
			return res, nil, nil
		}
	}
	fail := func(res *base.Response) (*base.Response, *gortsplib.ServerStream, error) {
		d.st.Close()
		return res, nil, nil
	}
	if !s.takeSession() {
		s.limited("max-sessions", "play refused: too many sessions", "remote", remote, "stream", name)
		return fail(refuse(base.StatusServiceUnavailable, "too many sessions"))
	}
	place, err := s.hub.Admit(Protocol, remote)
	if err != nil {
		s.dropSession()
		s.log.Info("play refused", "remote", remote, "stream", name, "reason", err)
		return fail(refuse(base.StatusNotEnoughBandwidth, err.Error()))
	}
	rd, err := s.hub.NewReader(name, Protocol)
	if err != nil {
		place.Release()
		s.dropSession()
		return fail(refuse(base.StatusNotFound, errNotLive.Error()))
	}
	log := s.log.With("stream", name, "remote", remote, "transport", ctx.Transport.Protocol.String(), "tls", h.secure)
	sess := &session{s: s, rs: ctx.Session, name: name, remote: remote, log: log, place: place}
	sess.play = newPlayer(s.ctx, rd, d.tracks, d.st, log)
	ctx.Session.SetUserData(sess)
	return &base.Response{StatusCode: base.StatusOK}, d.st, nil
}

// OnPlay starts a viewer's session: its packets start once the answer
// leaves (OnResponse).
func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	s := h.s
	sess, _ := ctx.Session.UserData().(*session)
	if sess == nil || sess.play == nil {
		return refuse(base.StatusMethodNotValidInThisState, "SETUP first"), nil
	}
	if sess.started {
		return &base.Response{StatusCode: base.StatusOK}, nil // PLAY again
	}
	if cs := stateOf(ctx.Conn); cs != nil && !cs.c.started() {
		return refuse(base.StatusRequestTimeout, "handshake timeout"), nil
	}
	sess.started = true
	_, sess.end = s.hub.StartSession(hub.Session{Kind: hub.KindPlay, Protocol: Protocol, Stream: sess.name, RemoteAddr: sess.remote, Place: sess.place}, ctx.Session.Close)
	sess.log.Info("play started", "tracks", sess.play.tracks.String())
	p, rs := sess.play, ctx.Session
	p.playing.Store(true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := p.run()
		if p.ctx.Err() == nil {
			sess.log.Info("play ending", "reason", playEnd(err))
		}
		rs.Close()
	}()
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// playEnd says why a viewer's packets stopped.
func playEnd(err error) string {
	switch {
	case errors.Is(err, stream.ErrSlowReader):
		return "viewer too slow"
	case err == nil || errors.Is(err, io.EOF):
		return "stream ended"
	}
	return err.Error()
}

// probe learns a stream's codecs from the decoder configuration a reader
// gets ahead of its first frame, waiting up to describeWait for a stream
// that has just started, and up to settleWait past the first frame for
// the configuration of a track that has not come yet.
func (s *Server) probe(name streamname.Name) (*playTracks, error) {
	rd, err := s.hub.NewReader(name, Protocol)
	if err != nil {
		return nil, errNotLive
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(s.ctx, describeWait)
	defer cancel()
	var video *media.VideoConfig
	var audio *media.AACConfig
	var first int64
	var settle time.Time // zero until the first frame
	pkts := make([]*media.Packet, 0, 64)
	for {
		wait := ctx
		if !settle.IsZero() {
			if (video != nil && audio != nil) || !time.Now().Before(settle) {
				break
			}
			var stop context.CancelFunc
			wait, stop = context.WithDeadline(ctx, settle)
			pkts, err = rd.ReadPackets(wait, pkts[:0])
			stop()
		} else {
			pkts, err = rd.ReadPackets(wait, pkts[:0])
		}
		if err != nil {
			break
		}
		for _, p := range pkts {
			switch {
			case p.SeqHeader && p.Kind == media.KindVideo:
				if c, err := media.ParseVideoConfig(p.Codec, p.Payload); err == nil {
					video = c
				}
			case p.SeqHeader && p.Codec == media.CodecAAC:
				if c, err := media.ParseAACConfig(p.Payload); err == nil {
					audio = c
				}
			case p.Kind == media.KindVideo || p.Kind == media.KindAudio:
				switch {
				case settle.IsZero():
					first, settle = p.DTS, time.Now().Add(settleWait)
				case p.DTS-first >= settleWait.Milliseconds():
					settle = time.Now() // the backlog already spans it
				}
			}
		}
		clear(pkts)
	}
	if video == nil && audio == nil {
		if s.ctx.Err() != nil {
			return nil, errNotLive
		}
		return nil, errNoMedia
	}
	return newPlayTracks(video, audio)
}

// playTracks is what a viewer's session sends: the stream's codecs as
// described.
type playTracks struct {
	desc   *description.Session
	video  *media.VideoConfig // nil: no video track
	audio  *media.AACConfig   // nil: no audio track
	vMedia *description.Media
	aMedia *description.Media
	vForm  format.Format
	aForm  *format.MPEG4Audio
}

// newPlayTracks describes video and audio as RTP tracks.
func newPlayTracks(video *media.VideoConfig, audio *media.AACConfig) (*playTracks, error) {
	t := &playTracks{desc: &description.Session{Title: "meshcast"}, video: video, audio: audio}
	if video != nil {
		switch video.Codec {
		case media.CodecH264:
			t.vForm = &format.H264{PayloadTyp: videoPayloadType, PacketizationMode: 1, SPS: video.AVC.SPS[0], PPS: video.AVC.PPS[0]}
		case media.CodecH265:
			t.vForm = &format.H265{PayloadTyp: videoPayloadType, VPS: video.HEVC.VPS[0], SPS: video.HEVC.SPS[0], PPS: video.HEVC.PPS[0]}
		case media.CodecAV1:
			f := &format.AV1{PayloadTyp: videoPayloadType}
			var sh av1.SequenceHeader
			if sh.Unmarshal(video.AV1.SequenceHeader) == nil && len(sh.SeqLevelIdx) > 0 {
				profile, level, tier := int(sh.SeqProfile), int(sh.SeqLevelIdx[0]), 0
				if len(sh.SeqTier) > 0 && sh.SeqTier[0] {
					tier = 1
				}
				f.Profile, f.LevelIdx, f.Tier = &profile, &level, &tier
			}
			t.vForm = f
		default:
			return nil, fmt.Errorf("%s video is not played over RTSP", video.Codec)
		}
		t.vMedia = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{t.vForm}}
		t.desc.Medias = append(t.desc.Medias, t.vMedia)
	}
	if audio != nil {
		cfg := audio.Config
		t.aForm = &format.MPEG4Audio{PayloadTyp: audioPayloadType, ProfileLevelID: 1, Config: &cfg, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		t.aMedia = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{t.aForm}}
		t.desc.Medias = append(t.desc.Medias, t.aMedia)
	}
	return t, nil
}

// String names the tracks for logs, e.g. "h264 1280x720 High 3.1, aac 48000 Hz".
func (t *playTracks) String() string {
	out := ""
	if t.video != nil {
		out = t.video.String()
	}
	if t.audio != nil {
		if out != "" {
			out += ", "
		}
		out += fmt.Sprintf("aac %d Hz", t.audio.SampleRate)
	}
	return out
}

// rtpWriter takes a session's RTP packets (gortsplib.ServerStream).
type rtpWriter interface {
	WritePacketRTPWithNTP(m *description.Media, pkt *rtp.Packet, ntp time.Time) error
}

// player sends a stream's packets to one viewer's session as RTP.
type player struct {
	rd     *stream.Reader
	tracks *playTracks
	st     *gortsplib.ServerStream // the session's own
	out    rtpWriter               // st, but for tests
	log    *slog.Logger

	ctx    context.Context // ends the player
	cancel context.CancelFunc
	done   chan struct{}

	ready     chan struct{} // closed when the PLAY answer leaves
	readyOnce sync.Once
	playing   atomic.Bool  // PLAY was accepted
	overflows atomic.Int64 // packets the session's full queue refused

	// Owned by run.
	vEnc interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	aEnc interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	vBase    uint32
	aBase    uint32
	vConfig  *media.VideoConfig
	aNext    int64 // the next AAC frame's RTP time, when it follows on
	aNextOK  bool
	started  bool // a keyframe has been sent
	dropping bool // video waits for a keyframe after an overflow
	seen     int64
	strikes  []time.Time
	paceT0   time.Time
	paceD0   int64
	paced    bool
	ntp0     time.Time
	ntpD0    int64
}

func newPlayer(parent context.Context, rd *stream.Reader, tracks *playTracks, st *gortsplib.ServerStream, log *slog.Logger) *player {
	p := &player{rd: rd, tracks: tracks, st: st, out: st, log: log, ready: make(chan struct{}), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(parent)
	return p
}

// answered starts the packets once PLAY's answer leaves.
func (p *player) answered() {
	if p.playing.Load() {
		p.readyOnce.Do(func() { close(p.ready) })
	}
}

// stop ends the player, waits for run, and releases its reader and
// stream.
func (p *player) stop() {
	p.cancel()
	if p.playing.Load() {
		<-p.done
	}
	p.rd.Close()
	p.st.Close()
}

// run sends packets until the stream ends, the viewer falls too far
// behind or the player stops.
func (p *player) run() error {
	defer close(p.done)
	select {
	case <-p.ready:
	case <-p.ctx.Done():
		return p.ctx.Err()
	case <-time.After(answerWait):
		return errors.New("the PLAY answer never left")
	}
	if err := p.init(); err != nil {
		return err
	}
	pkts := make([]*media.Packet, 0, 64)
	for {
		var err error
		pkts, err = p.rd.ReadPackets(p.ctx, pkts[:0])
		if err != nil {
			return err
		}
		for _, pkt := range pkts {
			if err := p.send(pkt); err != nil {
				return err
			}
		}
		clear(pkts)
		if err := p.checkOverflow(); err != nil {
			return err
		}
	}
}

// init makes the tracks' RTP encoders, with random first timestamps
// (RFC 3550 §5.1).
func (p *player) init() error {
	var err error
	switch f := p.tracks.vForm.(type) {
	case *format.H264:
		p.vEnc, err = f.CreateEncoder()
	case *format.H265:
		p.vEnc, err = f.CreateEncoder()
	case *format.AV1:
		p.vEnc, err = f.CreateEncoder()
	}
	if err != nil {
		return err
	}
	if p.tracks.aForm != nil {
		if p.aEnc, err = p.tracks.aForm.CreateEncoder(); err != nil {
			return err
		}
	}
	p.vBase, p.aBase = rand.Uint32(), rand.Uint32()
	return nil
}

// send sends one packet of the stream.
func (p *player) send(pkt *media.Packet) error {
	switch pkt.Kind {
	case media.KindVideo:
		if p.tracks.video == nil {
			return nil
		}
		if pkt.SeqHeader {
			c, err := media.ParseVideoConfig(pkt.Codec, pkt.Payload)
			if err != nil {
				return nil
			}
			if c.Codec != p.tracks.video.Codec {
				return fmt.Errorf("the stream's video changed to %s: play it again", c.Codec)
			}
			p.vConfig = c
			return nil
		}
		if p.vConfig == nil || pkt.Codec != p.vConfig.Codec {
			return nil
		}
		if !pkt.Keyframe && (!p.started || p.dropping) {
			return nil // a decoder starts at a keyframe
		}
		units, err := media.SplitFrame(pkt.Codec, pkt.Payload)
		if err != nil || len(units) == 0 {
			return nil
		}
		units = p.vConfig.WithParamSets(units, pkt.Keyframe)
		pkts, err := p.vEnc.Encode(units)
		if err != nil {
			return nil
		}
		if err := p.pace(pkt.DTS); err != nil {
			return err
		}
		p.started, p.dropping = true, false
		ts := p.vBase + uint32(pkt.PTS()*90)
		return p.write(p.tracks.vMedia, pkts, ts, pkt.PTS())
	case media.KindAudio:
		if p.tracks.audio == nil || pkt.Codec != media.CodecAAC {
			return nil
		}
		if pkt.SeqHeader {
			c, err := media.ParseAACConfig(pkt.Payload)
			if err != nil {
				return nil
			}
			want := p.tracks.audio.Config
			if c.Config.Type != want.Type || c.Config.SampleRate != want.SampleRate || c.Config.ChannelCount != want.ChannelCount {
				return errors.New("the stream's audio changed: play it again")
			}
			return nil
		}
		if p.tracks.video != nil && !p.started {
			return nil // the picture leads
		}
		pkts, err := p.aEnc.Encode([][]byte{pkt.Payload})
		if err != nil {
			return nil
		}
		if err := p.pace(pkt.DTS); err != nil {
			return err
		}
		// The frames' exact RTP times: 1024 samples apart while they
		// follow on within half a frame of their millisecond times.
		rate := int64(p.tracks.aForm.ClockRate())
		at := pkt.DTS * rate / 1000
		if p.aNextOK && at > p.aNext-512 && at < p.aNext+512 {
			at = p.aNext
		}
		p.aNext, p.aNextOK = at+1024, true
		return p.write(p.tracks.aMedia, pkts, p.aBase+uint32(at), pkt.DTS)
	}
	return nil
}

// write sends one frame's RTP packets at RTP time ts; ms is its place on
// the stream's timeline, which gives the wall time of RTCP sender
// reports.
func (p *player) write(m *description.Media, pkts []*rtp.Packet, ts uint32, ms int64) error {
	if p.ntp0.IsZero() {
		p.ntp0, p.ntpD0 = time.Now(), ms
	}
	ntp := p.ntp0.Add(time.Duration(ms-p.ntpD0) * time.Millisecond)
	for _, r := range pkts {
		r.Timestamp = ts
		if err := p.out.WritePacketRTPWithNTP(m, r, ntp); err != nil {
			return err
		}
	}
	return nil
}

// pace holds back the backlog a viewer gets on joining so that it leaves
// at catchUp times real time.
func (p *player) pace(dts int64) error {
	now := time.Now()
	if !p.paced {
		p.paceT0, p.paceD0, p.paced = now, dts, true
		return nil
	}
	wait := p.paceT0.Add(time.Duration(dts-p.paceD0) * time.Millisecond / catchUp).Sub(now)
	if wait <= 0 {
		return nil
	}
	if wait > maxPaceWait {
		p.paceT0, p.paceD0 = now, dts
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// checkOverflow notices packets the session's full queue refused: video
// then waits for a keyframe, so the viewer never decodes a broken
// picture, and a viewer that overflows maxOverflows times within
// overflowWindow is ended.
func (p *player) checkOverflow() error {
	n := p.overflows.Load()
	if n == p.seen {
		return nil
	}
	p.seen = n
	if p.dropping {
		return nil
	}
	p.dropping = true
	now := time.Now()
	kept := p.strikes[:0]
	for _, t := range p.strikes {
		if now.Sub(t) < overflowWindow {
			kept = append(kept, t)
		}
	}
	p.strikes = append(kept, now)
	if len(p.strikes) >= maxOverflows {
		return fmt.Errorf("viewer too slow: its queue overflowed %d times within %v", maxOverflows, overflowWindow)
	}
	p.log.Info("viewer's queue overflowed: video resumes at the next keyframe")
	return nil
}
