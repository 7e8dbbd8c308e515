// Package webrtc plays live streams to browsers over WebRTC, signalled by
// WHEP (POST /APP/STREAM/whep with an SDP offer; the answer comes back
// with the session's URL, which DELETE ends). WebRTC is
// github.com/pion/webrtc. Video is H.264 as published; AAC audio has no
// WebRTC codec, so those streams play video-only and the answer says why
// (X-Meshcast-Audio).
package webrtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
)

// SessionPath prefixes the URL of a WHEP session, which DELETE ends.
const SessionPath = "/api/v1/webrtc/sessions/"

// Limits.
const (
	// MaxOfferBytes bounds an SDP offer.
	MaxOfferBytes = 64 << 10
	// gatherTimeout bounds the wait for the server's ICE candidates.
	gatherTimeout = 5 * time.Second
	// connectTimeout closes a session whose peer never connects.
	connectTimeout = 15 * time.Second
)

// Hub is what the WebRTC server needs from the node's stream table.
type Hub interface {
	NewReader(name stream.Name, proto string) (*stream.Reader, error)
	StartSession(s hub.Session, kick func()) (id string, end func())
}

// Config configures the server.
type Config struct {
	// MaxSessions bounds the WebRTC viewers at once. Zero: 1000.
	MaxSessions int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server answers WHEP requests.
type Server struct {
	cfg Config
	hub Hub
	log *slog.Logger
	api *webrtc.API

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*session
}

// session is one WebRTC viewer or publisher.
type session struct {
	id      string
	name    stream.Name
	kind    string // "whep" or "whip"
	started time.Time
	pc      *webrtc.PeerConnection
	cancel  context.CancelFunc
}

// NoAudio says why WebRTC sessions carry no audio.
const NoAudio = "none: the streams carry AAC, which WebRTC cannot; transcoding to Opus is not available"

// SessionInfo describes a WebRTC session for the API.
type SessionInfo struct {
	ID      string    `json:"id"`
	Stream  string    `json:"stream"`
	Kind    string    `json:"kind"` // whep (playback) or whip (ingest)
	State   string    `json:"state"`
	Audio   string    `json:"audio"`
	Started time.Time `json:"started"`
}

// List describes the sessions, for GET /api/v1/webrtc/sessions.
func (s *Server) List() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []SessionInfo{}
	for _, ss := range s.sessions {
		out = append(out, SessionInfo{ID: ss.id, Stream: string(ss.name), Kind: ss.kind, State: ss.pc.ConnectionState().String(), Audio: NoAudio, Started: ss.started})
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// New builds a server playing the streams of h.
func New(cfg Config, h Hub) (*Server, error) {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		PayloadType: 102,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetIncludeLoopbackCandidate(true)
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, hub: h, log: cfg.Logger.With("component", "webrtc"),
		api: webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)),
		ctx: ctx, cancel: cancel, sessions: map[string]*session{},
	}, nil
}

// Close ends every session and waits.
func (s *Server) Close() {
	s.cancel()
	s.mu.Lock()
	for _, ss := range s.sessions {
		ss.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Sessions counts the WebRTC viewers.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// ServeWHEP answers POST /APP/STREAM/whep: an SDP offer in, the answer
// out (201, with the session's URL in Location).
func (s *Server) ServeWHEP(w http.ResponseWriter, r *http.Request, name stream.Name) {
	offer, ok := s.readOffer(w, r)
	if !ok {
		return
	}
	rd, err := s.hub.NewReader(name, "webrtc")
	if err != nil {
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	answer, ss, err := s.start(name, offer, rd, r.RemoteAddr)
	if err != nil {
		rd.Close()
		s.log.Info("whep refused", "stream", name, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeAnswer(w, ss, answer)
}

// readOffer reads a WHEP or WHIP request's SDP offer, or answers why not.
func (s *Server) readOffer(w http.ResponseWriter, r *http.Request) (string, bool) {
	offer, err := io.ReadAll(io.LimitReader(r.Body, MaxOfferBytes+1))
	if err != nil || len(offer) == 0 || len(offer) > MaxOfferBytes {
		http.Error(w, "the body must be an SDP offer of at most 64 KiB", http.StatusBadRequest)
		return "", false
	}
	if s.Sessions() >= s.cfg.MaxSessions {
		http.Error(w, "too many WebRTC sessions", http.StatusServiceUnavailable)
		return "", false
	}
	return string(offer), true
}

// writeAnswer answers a WHEP or WHIP offer: 201, the session's URL, and
// why it carries no audio.
func writeAnswer(w http.ResponseWriter, ss *session, answer string) {
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", SessionPath+ss.id)
	w.Header().Set("X-Meshcast-Audio", NoAudio)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// newSession makes a session of pc; its context ends with the server's,
// with cancel, and when the connection fails or closes.
func (s *Server) newSession(name stream.Name, kind string, pc *webrtc.PeerConnection, connected func()) (*session, context.Context) {
	var id [8]byte
	rand.Read(id[:])
	ctx, cancel := context.WithCancel(s.ctx)
	ss := &session{id: hex.EncodeToString(id[:]), name: name, kind: kind, started: time.Now(), pc: pc, cancel: cancel}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			if connected != nil {
				connected()
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed, webrtc.PeerConnectionStateDisconnected:
			cancel()
		}
	})
	return ss, ctx
}

// register lists a session, counting its goroutine for Close; false when
// the server is closing (the session is cancelled).
func (s *Server) register(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		ss.cancel()
		return false
	}
	s.sessions[ss.id] = ss
	s.wg.Add(1)
	return true
}

// unregister forgets a session.
func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss.id)
	s.mu.Unlock()
}

// ServeDelete answers DELETE on a session's URL: the viewer leaves.
func (s *Server) ServeDelete(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	ss.cancel()
	w.WriteHeader(http.StatusOK)
}

// start negotiates a session and starts sending rd to it.
func (s *Server) start(name stream.Name, offer string, rd *stream.Reader, remote string) (string, *session, error) {
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, *session, error) {
		pc.Close()
		return "", nil, err
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "meshcast")
	if err != nil {
		return fail(err)
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return fail(err)
	}
	answer, err := negotiate(pc, offer)
	if err != nil {
		return fail(err)
	}
	connected := make(chan struct{})
	var once sync.Once
	ss, ctx := s.newSession(name, "whep", pc, func() { once.Do(func() { close(connected) }) })
	if !s.register(ss) {
		return fail(errors.New("server closing"))
	}
	go s.run(ctx, ss, rd, track, sender, connected, remote)
	return answer, ss, nil
}

// run sends the stream's video to a session until it ends.
func (s *Server) run(ctx context.Context, ss *session, rd *stream.Reader, track *webrtc.TrackLocalStaticSample, sender *webrtc.RTPSender, connected <-chan struct{}, remote string) {
	defer s.wg.Done()
	defer func() {
		ss.cancel()
		rd.Close()
		ss.pc.Close()
		s.unregister(ss)
	}()
	log := s.log.With("stream", ss.name, "remote", remote, "session", ss.id)
	// Read the viewer's RTCP, which the interceptors need.
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	select {
	case <-connected:
	case <-ctx.Done():
		return
	case <-time.After(connectTimeout):
		log.Info("webrtc viewer never connected")
		return
	}
	_, endSession := s.hub.StartSession(hub.Session{Kind: hub.KindPlay, Protocol: "webrtc", Stream: ss.name, RemoteAddr: remote}, ss.cancel)
	defer endSession()
	log.Info("play started", "audio", "none (AAC)")
	err := feed(ctx, rd, track)
	log.Info("play ended", "err", err)
}

// feed writes the stream's H.264 frames to track as Annex B access units,
// from a keyframe on, with parameter sets before every keyframe.
func feed(ctx context.Context, rd *stream.Reader, track *webrtc.TrackLocalStaticSample) error {
	var avc *media.AVCConfig
	started := false
	var last int64
	pkts := make([]*media.Packet, 0, 128)
	for {
		var err error
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		if err != nil {
			return err
		}
		for _, p := range pkts {
			if p.Kind != media.KindVideo || p.Codec != media.CodecH264 {
				continue
			}
			if p.SeqHeader {
				if c, err := media.ParseAVCConfig(p.Payload); err == nil {
					avc = c
				}
				continue
			}
			if avc == nil || (!started && !p.Keyframe) {
				continue
			}
			nalus, err := media.AVCCToNALUs(p.Payload)
			if err != nil || len(nalus) == 0 {
				continue
			}
			if p.Keyframe && len(avc.SPS) > 0 && len(avc.PPS) > 0 {
				nalus = append([][]byte{avc.SPS[0], avc.PPS[0]}, nalus...)
			}
			d := 33 * time.Millisecond
			if started && p.DTS > last {
				d = time.Duration(p.DTS-last) * time.Millisecond
			}
			started, last = true, p.DTS
			if err := track.WriteSample(pmedia.Sample{Data: annexB(nalus), Duration: d}); err != nil {
				return err
			}
		}
		clear(pkts)
	}
}

// annexB joins NAL units with start codes.
func annexB(nalus [][]byte) []byte {
	n := 0
	for _, u := range nalus {
		n += 4 + len(u)
	}
	b := make([]byte, 0, n)
	for _, u := range nalus {
		b = append(b, 0, 0, 0, 1)
		b = append(b, u...)
	}
	return b
}
