// Package rtsp is meshcast's RTSP endpoint: players read any stream at
// rtsp://HOST:PORT/APP/STREAM over TCP (interleaved) or UDP, and
// publishers push streams in with ANNOUNCE and RECORD, as ffmpeg, OBS's
// RTSP output and encoders do. RTSPS is the same over TLS, TCP only. The
// RTSP protocol, RTP and RTCP are github.com/bluenviron/gortsplib; this
// package turns its RTP into media.Packets and back (ingest.go, play.go)
// and pulls from cameras and other servers (client.go).
//
// Each viewer's session has a stream.Reader of its own, so it starts at
// the stream's newest keyframe, decoder configuration first, and a slow
// one falls behind alone.
package rtsp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	rtspauth "github.com/bluenviron/gortsplib/v5/pkg/auth"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Protocol names RTSP in readers, sessions, admissions and authorization
// requests, over TLS too.
const Protocol = "rtsp"

// Hub is what the RTSP server needs from the node's stream table.
type Hub interface {
	Publish(name streamname.Name, info stream.PublisherInfo) (*stream.Publisher, error)
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
	Admit(proto, remote string) (*hub.Place, error)
	StartSession(s hub.Session, kick func()) (id string, end func())
}

// Authorizer admits or refuses a client's request to publish or play
// (auth.Authorizer).
type Authorizer interface {
	Check(ctx context.Context, req auth.Request) (auth.Grant, error)
}

// Limits and waits of the server.
const (
	// describeWait bounds the wait for a stream's decoder configuration
	// before it is described, when the stream has just started.
	describeWait = 3 * time.Second
	// settleWait is how long a description waits, after the first frame,
	// for a track whose configuration has not come yet (an encoder that
	// sends its audio configuration after its first picture).
	settleWait = time.Second
	// idleTimeout closes a connection that sends no request, and a UDP
	// viewer that sends neither keep-alives nor RTCP, for this long.
	idleTimeout = 60 * time.Second
	// writeQueue is the RTP packets queued for one viewer (a power of
	// two): about a second of 10 Mbit/s video, so the GOP a viewer gets
	// on joining fits.
	writeQueue = 1024
)

// Config configures the RTSP server.
type Config struct {
	// Addr is the RTSP (TCP) listen address, e.g. ":8554". Empty: no
	// plain RTSP.
	Addr string
	// UDPRTPAddr and UDPRTCPAddr are the UDP addresses of RTP and RTCP
	// (consecutive ports, RTP's even), e.g. ":8000" and ":8001". Both
	// empty: TCP only.
	UDPRTPAddr  string
	UDPRTCPAddr string
	// RTSPSAddr is the RTSPS listen address, e.g. ":8322". Empty: no
	// RTSPS. RTSPS carries RTP over its TLS connection only (no UDP).
	RTSPSAddr string
	// TLSConfig is the node's certificate, for RTSPS; required with
	// RTSPSAddr.
	TLSConfig *tls.Config
	// ReadTimeout closes a publisher that sends nothing for this long.
	// Defaults to 30s.
	ReadTimeout time.Duration
	// WriteTimeout closes a viewer whose connection takes nothing for
	// this long. Defaults to 10s.
	WriteTimeout time.Duration
	// HandshakeTimeout is how long a connection has from being accepted
	// to playing or publishing (TLS, DESCRIBE, ANNOUNCE, SETUP, PLAY or
	// RECORD). Defaults to 10s.
	HandshakeTimeout time.Duration
	// MaxConnections caps the RTSP and RTSPS connections at once, and
	// the sessions set up to play or publish at once (a UDP session
	// outlives its connection). Defaults to 10000.
	MaxConnections int
	// MaxConnectionsPerIP caps the connections of one client address
	// that wait to play or publish (see connlimit.Slot). Defaults to 0: no
	// limit. Sessions per address are the hub's (Admit).
	MaxConnectionsPerIP int
	// Auth admits publishers and players; nil admits everybody.
	Auth Authorizer
	// FFmpeg is the ffmpeg binary, looked up in PATH, that turns an Opus
	// publisher's audio into AAC. Empty, or not found: Opus audio is not
	// taken (a publisher with video publishes its video only; one with
	// Opus only is refused).
	FFmpeg string
	// MaxTranscoders bounds the Opus publishers transcoded at once (one
	// ffmpeg each); past it, Opus is not taken. Defaults to 16.
	MaxTranscoders int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server is the RTSP and RTSPS endpoint.
type Server struct {
	cfg    Config
	hub    Hub
	log    *slog.Logger
	ffmpeg string // the ffmpeg found, or ""

	servers []*gortsplib.Server // plain, then TLS
	lns     []net.Listener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	perIP             *connlimit.PerIP
	logs              connlimit.LogLimiter // at most one line a second per reason
	conns             atomic.Int64         // open connections
	sessions          atomic.Int64         // sessions playing or publishing
	refusedTotal      atomic.Uint64
	refusedSessions   atomic.Uint64
	handshakeTimeouts atomic.Uint64
	transcoders       atomic.Int64 // Opus publishers transcoding
}

// New builds a server for h. Nothing listens until Start.
func New(cfg Config, h Hub) *Server {
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 10000
	}
	if cfg.MaxTranscoders <= 0 {
		cfg.MaxTranscoders = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:    cfg,
		hub:    h,
		log:    cfg.Logger.With("component", "rtsp"),
		ctx:    ctx,
		cancel: cancel,
		perIP:  connlimit.NewPerIP(cfg.MaxConnectionsPerIP),
	}
}

// Start listens on the configured addresses.
func (s *Server) Start() error {
	if s.cfg.Addr == "" && s.cfg.RTSPSAddr == "" {
		return errors.New("rtsp: no listen address")
	}
	if (s.cfg.UDPRTPAddr == "") != (s.cfg.UDPRTCPAddr == "") {
		return errors.New("rtsp: UDP needs both the RTP and the RTCP address")
	}
	if s.cfg.RTSPSAddr != "" && s.cfg.TLSConfig == nil {
		return errors.New("rtsp: RTSPS needs a TLS certificate")
	}
	if s.cfg.FFmpeg != "" {
		path, err := exec.LookPath(s.cfg.FFmpeg)
		if err != nil {
			s.log.Warn("rtsp: ffmpeg not found: Opus publishers' audio is not taken", "ffmpeg", s.cfg.FFmpeg)
		}
		s.ffmpeg = path
	}
	if s.cfg.Addr != "" {
		if err := s.listen(s.cfg.Addr, nil, s.cfg.UDPRTPAddr, s.cfg.UDPRTCPAddr); err != nil {
			s.Close()
			return err
		}
	}
	if s.cfg.RTSPSAddr != "" {
		if err := s.listen(s.cfg.RTSPSAddr, s.cfg.TLSConfig, "", ""); err != nil {
			s.Close()
			return err
		}
	}
	return nil
}

// listen starts one gortsplib server.
func (s *Server) listen(addr string, tlsConfig *tls.Config, rtpAddr, rtcpAddr string) error {
	h := &handler{s: s, secure: tlsConfig != nil}
	rs := &gortsplib.Server{
		Handler:        h,
		RTSPAddress:    addr,
		UDPRTPAddress:  rtpAddr,
		UDPRTCPAddress: rtcpAddr,
		ReadTimeout:    s.cfg.ReadTimeout,
		WriteTimeout:   s.cfg.WriteTimeout,
		IdleTimeout:    idleTimeout,
		TLSConfig:      tlsConfig,
		WriteQueueSize: writeQueue,
		// A publish key can only be a password the server reads: Digest
		// hides it.
		AuthMethods: []rtspauth.VerifyMethod{rtspauth.VerifyMethodBasic},
		Listen: func(network, address string) (net.Listener, error) {
			// No TCP keep-alive: reads and writes have deadlines.
			lc := net.ListenConfig{KeepAlive: -1}
			ln, err := lc.Listen(s.ctx, network, address)
			if err != nil {
				return nil, err
			}
			return &listener{Listener: ln, s: s}, nil
		},
	}
	h.rs = rs
	if err := rs.Start(); err != nil {
		return fmt.Errorf("rtsp: listen %s: %w", addr, err)
	}
	s.servers = append(s.servers, rs)
	s.lns = append(s.lns, rs.NetListener())
	s.log.Info("rtsp listening", "addr", rs.NetListener().Addr(), "tls", tlsConfig != nil, "udp", rtpAddr != "")
	return nil
}

// Addr is the plain RTSP listener's address (nil without one).
func (s *Server) Addr() net.Addr { return s.addr(false) }

// TLSAddr is the RTSPS listener's address (nil without one).
func (s *Server) TLSAddr() net.Addr { return s.addr(true) }

func (s *Server) addr(secure bool) net.Addr {
	for i, rs := range s.servers {
		if (rs.TLSConfig != nil) == secure {
			return s.lns[i].Addr()
		}
	}
	return nil
}

// Connections returns the number of open RTSP and RTSPS connections.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Refusals counts connections and sessions the server's limits refused.
type Refusals struct {
	// MaxConnections counts connections refused at MaxConnections, and
	// sessions refused because as many were playing or publishing.
	MaxConnections uint64
	// PerIP counts connections refused, or closed while waiting, at
	// MaxConnectionsPerIP.
	PerIP uint64
	// HandshakeTimeout counts connections closed for not playing or
	// publishing within HandshakeTimeout.
	HandshakeTimeout uint64
}

// Refusals returns the counts of what the limits refused.
func (s *Server) Refusals() Refusals {
	return Refusals{
		MaxConnections:   s.refusedTotal.Load() + s.refusedSessions.Load(),
		PerIP:            s.perIP.Refused(),
		HandshakeTimeout: s.handshakeTimeouts.Load(),
	}
}

// Close ends every session and connection and waits for them.
func (s *Server) Close() {
	s.cancel()
	for _, rs := range s.servers {
		rs.Close() // ends every session: OnSessionClose cleans up
	}
	s.wg.Wait()
}

// limited logs at most once a second per reason.
func (s *Server) limited(reason, msg string, args ...any) {
	s.logs.Log(s.log, slog.LevelInfo, reason, msg, args...)
}

// takeSession counts one more session playing or publishing, or refuses
// it at MaxConnections; dropSession uncounts it.
func (s *Server) takeSession() bool {
	if s.sessions.Add(1) > int64(s.cfg.MaxConnections) {
		s.sessions.Add(-1)
		s.refusedSessions.Add(1)
		return false
	}
	return true
}

func (s *Server) dropSession() { s.sessions.Add(-1) }

// SetMaxConnectionsPerIP changes Config.MaxConnectionsPerIP (a reload):
// connections accepted from now on meet the new limit.
func (s *Server) SetMaxConnectionsPerIP(n int) { s.perIP.SetMax(n) }
