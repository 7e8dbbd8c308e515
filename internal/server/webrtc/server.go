// Package webrtc plays live streams to browsers over WebRTC, signalled by
// WHEP (POST /APP/STREAM/whep with an SDP offer; the answer comes back
// with the session's URL, which DELETE ends), and takes streams from
// WebRTC publishers, signalled by WHIP (whip.go). WebRTC is
// github.com/pion/webrtc.
//
// Video is H.264 as published, made into RTP packets once per stream for
// all its viewers, whose lost packets are sent again from the same
// packets (feed.go, viewer.go). Streams carry AAC audio, which WebRTC
// lacks, so audio is transcoded by a supervised ffmpeg (opus.go): one per
// stream with WHEP viewers turns its AAC into Opus for all of them, and
// one per WHIP publisher turns its Opus into AAC. Where transcoding is
// off, ffmpeg is missing or the stream has no audio, sessions are
// video-only, and the answer's X-Meshcast-Audio header and the sessions
// API say why.
//
// Beyond the LAN (network.go): every session's media shares one UDP
// socket, ICE-TCP serves clients without UDP, clients are offered the
// addresses of the interfaces that matter, or NAT addresses instead, and
// answers hand out STUN and TURN servers, TURN with credentials of the
// session's own (iceservers.go).
package webrtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/ffproc"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
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
	// probeTimeout bounds the wait for a stream's first packets, which
	// tell whether it has audio, before a WHEP answer.
	probeTimeout = 2 * time.Second
)

// Hub is what the WebRTC server needs from the node's stream table.
type Hub interface {
	Get(name streamname.Name) *stream.Stream
	Publish(name streamname.Name, info stream.PublisherInfo) (*stream.Publisher, error)
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
	Admit(proto, remote string) (*hub.Place, error)
	StartSession(s hub.Session, kick func()) (id string, end func())
}

// Config configures the server.
type Config struct {
	// MaxSessions bounds the WebRTC viewers at once. Zero: 1000.
	MaxSessions int
	// Opus transcodes audio between AAC and Opus with FFmpeg. Defaults
	// to false: sessions are video-only.
	Opus bool
	// FFmpeg is the ffmpeg binary, looked up in PATH. Defaults to
	// "ffmpeg".
	FFmpeg string
	// MaxTranscoders bounds the audio transcoding ffmpeg processes of
	// both directions. Zero: 64.
	MaxTranscoders int
	// TranscodeGrace is how long a stream's Opus transcoder outlives its
	// last WHEP viewer, for the next. Zero: 5s.
	TranscodeGrace time.Duration
	// TranscodeBackoff is the first delay before a failed transcoder
	// starts again; it doubles up to 30s. Zero: 1s.
	TranscodeBackoff time.Duration
	// Auth admits players and publishers; nil admits everybody.
	Auth auth.Authorizer
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// UDPAddr is the one UDP address of every session's media (ICE over
	// a UDP mux, RFC 8445 §6.1.1 host candidates on one port):
	// HOST:PORT, or :PORT for every address of the interfaces offered.
	// Empty gives each session ports of its own. Defaults to "".
	UDPAddr string
	// TCPAddr is the ICE-TCP listen address (RFC 6544, passive
	// candidates), for clients that cannot use UDP. Empty: none.
	TCPAddr string
	// NATIPs are the addresses offered in host candidates instead of
	// the host's own, behind a 1:1 NAT: an IP replaces every local
	// address of its family, EXTERNAL/LOCAL replaces LOCAL alone.
	// Defaults to none.
	NATIPs []string
	// Interfaces are the names or path.Match patterns of the interfaces
	// whose addresses are offered. Empty: every interface but
	// SkippedInterfaces. Link-local addresses never are.
	Interfaces []string
	// ICEServers are STUN and TURN URLs handed to clients in the
	// answer's Link headers. Defaults to none.
	ICEServers []string
	// TURNSecret makes the time-limited credentials of the TURN servers
	// in ICEServers (TURNCredentials); required with one.
	TURNSecret string
	// TURNTTL is how long TURN credentials last. Zero: DefaultTURNTTL.
	TURNTTL time.Duration
}

// Server answers WHEP requests.
type Server struct {
	cfg Config
	hub Hub
	log *slog.Logger
	// The APIs are set by Start. whepAPI sends H.264 and Opus to
	// viewers; whipAPI and videoAPI take WHIP publishers' H.264 and Opus, or
	// H.264 only, which tells those whose audio is not taken so in the
	// answer.
	whepAPI  *webrtc.API
	whipAPI  *webrtc.API
	videoAPI *webrtc.API
	tc       *transcoders
	logs     connlimit.LogLimiter // refusals: at most one line a second

	keepIface   func(name string) bool // interfaces whose addresses are offered
	natRules    []webrtc.ICEAddressRewriteRule
	iceServers  []iceServer
	udpMux      ice.UDPMux // nil: a socket per session
	udpAddr     net.Addr
	tcpMux      ice.TCPMux // nil: no ICE-TCP
	tcpAddr     net.Addr
	tcpNetworks []webrtc.NetworkType // the families tcpMux listens to

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*session
	feeds    map[streamname.Name]*feed // the streams WHEP viewers play
}

// session is one WebRTC viewer or publisher.
type session struct {
	id      string
	name    streamname.Name
	kind    string // "whep" or "whip"
	started time.Time
	pc      *webrtc.PeerConnection
	cancel  context.CancelFunc
	audio   func() string // what the session says about its audio
	video   *videoSender  // a WHEP session's video; nil for WHIP
}

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
		out = append(out, SessionInfo{ID: ss.id, Stream: string(ss.name), Kind: ss.kind, State: ss.pc.ConnectionState().String(), Audio: ss.audio(), Started: ss.started})
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// New builds a server playing the streams of h. It takes offers once
// Start has opened its sockets.
func New(cfg Config, h Hub) (*Server, error) {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	if cfg.MaxTranscoders <= 0 {
		cfg.MaxTranscoders = 64
	}
	if cfg.TranscodeGrace <= 0 {
		cfg.TranscodeGrace = 5 * time.Second
	}
	if cfg.TranscodeBackoff <= 0 {
		cfg.TranscodeBackoff = ffproc.DefaultBackoff
	}
	if cfg.TURNTTL <= 0 {
		cfg.TURNTTL = DefaultTURNTTL
	}
	keep, err := interfaceFilter(cfg.Interfaces)
	if err != nil {
		return nil, fmt.Errorf("webrtc: interfaces: %w", err)
	}
	rules, err := natRules(cfg.NATIPs)
	if err != nil {
		return nil, fmt.Errorf("webrtc: NAT addresses: %w", err)
	}
	servers, err := parseICEServers(cfg.ICEServers, cfg.TURNSecret)
	if err != nil {
		return nil, fmt.Errorf("webrtc: ICE servers: %w", err)
	}
	log := cfg.Logger.With("component", "webrtc")
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, hub: h, log: log, tc: newTranscoders(cfg, h, log),
		keepIface: keep, natRules: rules, iceServers: servers,
		ctx: ctx, cancel: cancel, sessions: map[string]*session{}, feeds: map[streamname.Name]*feed{},
	}, nil
}

// Start opens the sockets sessions share, UDPAddr and TCPAddr, and readies
// the server for offers. Close closes them, even after Start failed.
func (s *Server) Start() error {
	if s.cfg.UDPAddr != "" {
		mux, addr, err := listenUDP(s.cfg.UDPAddr, s.keepIface, s.log)
		if err != nil {
			return fmt.Errorf("webrtc: udp: %w", err)
		}
		s.udpMux, s.udpAddr = mux, addr
	}
	if s.cfg.TCPAddr != "" {
		// A session holds one ICE-TCP connection, and may have opened
		// another while its checks ran.
		mux, addr, networks, err := listenTCP(s.cfg.TCPAddr, 2*s.cfg.MaxSessions, s.log)
		if err != nil {
			return fmt.Errorf("webrtc: tcp: %w", err)
		}
		s.tcpMux, s.tcpAddr, s.tcpNetworks = mux, addr, networks
	}
	se, err := s.settingEngine()
	if err != nil {
		return fmt.Errorf("webrtc: %w", err)
	}
	if s.whepAPI, err = newWHEPAPI(se); err != nil {
		return err
	}
	if s.whipAPI, err = newWHIPAPI(se, true); err != nil {
		return err
	}
	if s.videoAPI, err = newWHIPAPI(se, false); err != nil {
		return err
	}
	s.log.Info("webrtc ready", "udp", addrString(s.udpAddr, "a port per session"), "tcp", addrString(s.tcpAddr, "off"))
	return nil
}

// addrString is addr, or none when it is nil.
func addrString(addr net.Addr, none string) string {
	if addr == nil {
		return none
	}
	return addr.String()
}

// UDPAddr is the address of the UDP socket every session shares; nil
// when each has its own.
func (s *Server) UDPAddr() net.Addr { return s.udpAddr }

// TCPAddr is the ICE-TCP listener's address; nil without one.
func (s *Server) TCPAddr() net.Addr { return s.tcpAddr }

// h264Codec is the H.264 WebRTC sends and takes: Constrained Baseline's
// profile-level-id, which browsers answer, though streams of any profile
// go out as they are.
var h264Codec = webrtc.RTPCodecParameters{
	RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
	PayloadType: 102,
}

// newWHEPAPI makes the WebRTC API of WHEP viewers: H.264 and Opus, sent.
// Its one interceptor sends RTCP sender reports, which players sync audio
// and video by (RFC 3550 §6.4.1). Everything else a viewer costs is
// shared by the stream's viewers (feed.go): retransmissions for NACKs come
// from the stream's feed rather than a history per viewer, keyframe
// requests are counted, as a publisher cannot be asked for one, and
// without congestion control to feed, neither transport-wide feedback nor
// statistics are kept.
func newWHEPAPI(se webrtc.SettingEngine) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	video := h264Codec
	video.RTCPFeedback = []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	if err := m.RegisterCodec(video, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opusCodec, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	reports, err := report.NewSenderInterceptor()
	if err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	ir.Add(reports)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir)), nil
}

// newWHIPAPI makes the WebRTC API of WHIP publishers: H.264 and, with
// audio, Opus, received. Its interceptors are pion's defaults, which a
// receiver needs: NACKs for lost packets, receiver reports, and
// transport-wide congestion feedback, by which browsers set their
// bitrate.
func newWHIPAPI(se webrtc.SettingEngine, audio bool) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(h264Codec, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	if audio {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opusCodec, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir)), nil
}

// opusCodec is the Opus WebRTC sends: 48 kHz, stereo (RFC 7587).
var opusCodec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: opusClock, Channels: 2,
	SDPFmtpLine: "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1"}

// Close ends every session and transcoder, and waits.
func (s *Server) Close() {
	s.cancel()
	s.mu.Lock()
	for _, ss := range s.sessions {
		ss.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.tc.close()
	if s.udpMux != nil {
		s.udpMux.Close()
	}
	if s.tcpMux != nil {
		s.tcpMux.Close()
	}
}

// Sessions counts the WebRTC viewers.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// admit takes a place for a session of the request's client (hub.Admit),
// or answers why not.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, name streamname.Name) (*hub.Place, error) {
	place, err := s.hub.Admit("webrtc", r.RemoteAddr)
	if err != nil {
		s.logs.Log(s.log, slog.LevelInfo, "viewers-per-ip", "webrtc session refused", "stream", name, "remote", r.RemoteAddr, "reason", err)
		http.Error(w, err.Error(), http.StatusTooManyRequests)
	}
	return place, err
}

// readOffer reads a WHEP or WHIP request's SDP offer, or answers why not.
func (s *Server) readOffer(w http.ResponseWriter, r *http.Request) (string, bool) {
	if s.whepAPI == nil {
		http.Error(w, "WebRTC is not started", http.StatusServiceUnavailable)
		return "", false
	}
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

// writeAnswer answers a WHEP or WHIP offer: 201, the session's URL, what
// audio it carries, or why none, and the STUN and TURN servers clients
// may use (Link headers, with TURN credentials of the session's own).
// The session's URL is under its stream's path, /APP/STREAM/whep/ID (or
// whip), so a balancer hashing on the stream sends its DELETE and PATCH
// to this node.
func (s *Server) writeAnswer(w http.ResponseWriter, ss *session, answer string) {
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", ss.url())
	w.Header().Set("X-Meshcast-Audio", ss.audio())
	for _, l := range iceLinks(s.iceServers, s.cfg.TURNSecret, s.cfg.TURNTTL, ss.id, time.Now()) {
		w.Header().Add("Link", l)
	}
	// None of these headers is CORS-safelisted: a page of another origin
	// that the CORS policy admits reads them only once they are exposed.
	w.Header().Set("Access-Control-Expose-Headers", "Location, Link, X-Meshcast-Audio")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// newSession makes a session of pc; its context ends with the server's,
// with cancel, and when the connection fails or closes.
func (s *Server) newSession(name streamname.Name, kind string, pc *webrtc.PeerConnection, audio func() string, connected func()) (*session, context.Context) {
	var id [8]byte
	rand.Read(id[:])
	ctx, cancel := context.WithCancel(s.ctx)
	ss := &session{id: hex.EncodeToString(id[:]), name: name, kind: kind, started: time.Now(), pc: pc, cancel: cancel, audio: audio}
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

// serveDelete answers DELETE on a session's URL: the viewer leaves.
func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, id string) {
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

// session returns the session id of stream name and kind, or nil.
func (s *Server) session(name streamname.Name, kind, id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[id]; ss != nil && ss.name == name && ss.kind == kind {
		return ss
	}
	return nil
}

// url is the session's URL: under its stream's path.
func (ss *session) url() string { return "/" + string(ss.name) + "/" + ss.kind + "/" + ss.id }
