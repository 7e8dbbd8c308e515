// Package app is meshcast's composition root: it builds every component from
// the configuration, starts them, and stops them in order.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/api"
	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/events"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/metrics"
	"github.com/meshcast/meshcast/internal/push"
	"github.com/meshcast/meshcast/internal/record"
	"github.com/meshcast/meshcast/internal/server/hls"
	"github.com/meshcast/meshcast/internal/server/httpflv"
	"github.com/meshcast/meshcast/internal/server/rtmp"
	"github.com/meshcast/meshcast/internal/server/rtsp"
	"github.com/meshcast/meshcast/internal/server/srt"
	"github.com/meshcast/meshcast/internal/server/webrtc"
	"github.com/meshcast/meshcast/internal/snapshot"
	"github.com/meshcast/meshcast/internal/source"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/tlsutil"
	"github.com/meshcast/meshcast/internal/transcode"
	"github.com/meshcast/meshcast/internal/vod"
	"github.com/meshcast/meshcast/internal/web"
	"github.com/meshcast/meshcast/internal/webhook"
)

// App is one running meshcast node.
type App struct {
	cfg config.Config
	log *slog.Logger

	Hub     *hub.Hub
	sender  *egress.Sender // writes to every RTMP and HTTP-FLV viewer
	rtmp    *rtmp.Server
	rtmps   *rtmp.Server // nil without a TLS certificate
	srt     *srt.Server  // nil without --srt-addr
	rtsp    *rtsp.Server // nil without --rtsp-addr and --rtsps-addr
	rtc     *webrtc.Server
	flv     *httpflv.Server
	hls     *hls.Server
	api     *api.API
	snap    *snapshot.Service
	push    *push.Manager
	sources *source.Manager
	vod     *vod.Service

	registry    cluster.Registry
	ownRegistry bool                // built from the configuration: closed with the node
	draining    atomic.Bool         // /readyz answers 503
	hooks       *webhook.Dispatcher // nil without webhook URLs; set by Start

	// Set by Start, read by the hub's owner and upstream adapters, which
	// may run as soon as the listeners accept.
	member atomic.Pointer[cluster.Member]
	relays atomic.Pointer[cluster.Relays] // nil without a cluster secret

	httpSrv *http.Server
	httpLn  net.Listener
	httpErr chan error
	metrics *prometheus.Registry // GET /metrics

	tlsCfg   *tls.Config // HTTPS and RTMPS; nil without a TLS certificate
	httpsSrv *http.Server
	httpsLn  net.Listener
	httpsErr chan error

	events *events.Endpoint // Socket.IO events; its server is set by Start

	peers *cluster.PeerClient // requests to other nodes: relay pulls, VOD copies, transcoding jobs

	httpPerIP *connlimit.PerIP // waiting HTTP connections per client address, for every HTTP listener

	// What a reload changes (reload.go).
	mu      sync.Mutex    // guards live
	live    config.Config // the configuration in force after reloads
	auth    *auth.Live
	origins *httpfront.Origins
	level   *slog.LevelVar                // nil: the log level is fixed
	source  func() (config.Config, error) // nil: no reload

	recorder *record.Recorder  // nil when nothing is recorded
	trans    *transcode.Placer // transcoding ladders
	recHooks recordHooks       // on_record_done of its recordings
}

// New builds a node from cfg. Nothing listens until Start.
func New(cfg config.Config, log *slog.Logger, opts ...Option) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	a := &App{cfg: cfg, live: cfg, log: log, events: &events.Endpoint{Modules: cfg.WebModules}}
	for _, o := range opts {
		o(a)
	}
	a.peers = cluster.NewPeerClient(cfg.ClusterSecret, func() cluster.NodeID { return cluster.NodeID(a.nodeID()) })
	if cfg.TLSCert != "" {
		certs, err := tlsutil.NewReloader(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			return nil, err
		}
		a.tlsCfg = certs.Config()
	}
	if a.registry == nil {
		reg, err := newRegistry(cfg)
		if err != nil {
			return nil, err
		}
		a.registry, a.ownRegistry = reg, true
	}
	mreg := metrics.NewRegistry()
	a.registry = metrics.InstrumentRegistry(a.registry, mreg) // member, relays, router and API alike
	counters := new(stream.Counters)
	h := hub.New(hub.Config{
		PublisherGrace:   cfg.PublisherGrace,
		Stream:           stream.Config{MaxLag: cfg.MaxLag, Counters: counters},
		Owner:            owner{a},
		Upstream:         upstream{a},
		Reserved:         func(name streamname.Name) bool { return a.sources.Has(name) },
		MaxSessionsPerIP: cfg.MaxViewersPerIP,
		Logger:           log,
	})
	sender := egress.NewSender(0)
	a.Hub, a.sender = h, sender
	policy, err := a.policy(cfg)
	if err != nil {
		return nil, err
	}
	az := auth.NewLive(policy)
	a.auth, a.origins = az, httpfront.NewOrigins(cfg.CORSOrigins)
	rcfg := rtmpLimits(cfg, rtmp.Config{
		Addr:           cfg.RTMPAddr,
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		MaxConnections: cfg.MaxConnections,
		MergeWindow:    cfg.WriteMerge(),
		Nagle:          cfg.Nagle(),
		Sender:         sender,
		TrustedProxies: cfg.TrustedNets(),
		Auth:           az,
		Logger:         log,
	})
	a.rtmp = rtmp.New(rcfg, h)
	if cfg.SRTAddr != "" {
		a.srt = srt.New(srt.Config{Addr: cfg.SRTAddr, MaxConnections: cfg.MaxConnections, HandshakeTimeout: cfg.HandshakeTimeout,
			ReadTimeout: cfg.ReadTimeout, Auth: az, Logger: log}, h)
	}
	if a.tlsCfg != nil {
		rcfg.Addr, rcfg.TLSConfig = cfg.RTMPSAddr, a.tlsCfg
		a.rtmps = rtmp.New(rcfg, h) // the same hub and sender: RTMP over TLS
	}
	a.newRTSP(cfg, az)
	a.newSources(cfg)
	a.flv = httpflv.New(httpflv.Config{WriteTimeout: cfg.WriteTimeout, MergeWindow: cfg.WriteMerge(), Nagle: cfg.Nagle(), Sender: sender,
		AllowOrigin: a.origins.Allow, Auth: az, Peers: a.peers, Logger: log,
		Self: func() cluster.NodeID { return cluster.NodeID(a.nodeID()) }, Path: a.relayPath}, h)
	if a.rtc, err = webrtc.New(webrtc.Config{MaxSessions: cfg.MaxConnections, Opus: cfg.WebRTCOpus, FFmpeg: cfg.FFmpeg, Auth: az, Logger: log,
		UDPAddr: cfg.WebRTCUDPAddr, TCPAddr: cfg.WebRTCTCPAddr, NATIPs: cfg.WebRTCNATIPs, Interfaces: cfg.WebRTCInterfaces,
		ICEServers: cfg.WebRTCICEServers, TURNSecret: cfg.WebRTCTURNSecret, TURNTTL: cfg.WebRTCTURNTTL}, h); err != nil {
		return nil, err
	}
	a.initTranscoder(mreg)
	a.hls = hls.New(hls.Config{SegmentDuration: cfg.HLSSegmentDuration, SegmentCount: cfg.HLSSegmentCount, LowLatency: cfg.HLSLowLatency,
		IdleTimeout: cfg.HLSIdleTimeout, Auth: az, Renditions: a.trans.LiveRenditions, Logger: log}, h)
	mreg.MustRegister(metrics.NewCollector(metrics.Sources{Streams: h, Sender: sender, Counters: counters,
		HLSViewers: a.hls.Viewers, RelayUpstreams: a.relayUpstreams, MaxStreams: cfg.MetricsMaxStreams,
		RTMPConnections: a.rtmpConnections}))
	a.initLimits(mreg)
	a.metrics = mreg
	sel, err := cluster.NewSelector(cfg.Balance)
	if err != nil {
		return nil, err
	}
	if err := a.initRecorder(mreg); err != nil {
		return nil, err
	}
	a.api = api.New(h, map[string]api.ViewerCounter{"hls": a.hls}, a.registry, cluster.NewRouter(a.registry, sel), cfg.Redacted(), cfg.AdminToken)
	a.snap = snapshot.New(snapshot.Config{FFmpeg: cfg.FFmpeg, Auth: az, Owner: a.ownerAddr, Peers: a.peers, Logger: log}, h)
	a.newPush(cfg, mreg)
	a.api.Reload = func() (any, error) { return a.Reload() }
	if err := a.initVOD(mreg); err != nil {
		return nil, err
	}
	return a, nil
}

// Start binds the listeners and serves until Close.
func (a *App) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: listen: %w", err)
	}
	ln = connlimit.NewListener(ln, a.httpPerIP, a.listenerConfig("http"))
	var tlsLn net.Listener // HTTPS
	if a.tlsCfg != nil {
		if tlsLn, err = net.Listen("tcp", a.cfg.HTTPSAddr); err != nil {
			ln.Close()
			return fmt.Errorf("https: listen: %w", err)
		}
		tlsLn = connlimit.NewListener(tlsLn, a.httpPerIP, a.listenerConfig("https"))
	}
	if err := a.startListeners(ctx); err != nil {
		ln.Close()
		if tlsLn != nil {
			tlsLn.Close()
		}
		return err
	}
	h := a.Handler()
	a.httpLn = ln
	a.httpSrv, a.httpErr = a.serveHTTP(ln, h, nil)
	if tlsLn != nil {
		a.httpsLn = tlsLn
		a.httpsSrv, a.httpsErr = a.serveHTTP(tlsLn, h, a.tlsCfg)
	}
	a.startCluster()
	a.sources.Start() // always-on sources claim their names: after the cluster
	a.startWebhooks(a.member.Load().ID())
	a.startRecordHooks()
	a.startEvents(a.member.Load().ID())
	return nil
}

// startListeners starts the RTMP server, the RTMPS and SRT ones if there
// are, and opens WebRTC's sockets. A server started is stopped by Close,
// even if another failed to start.
func (a *App) startListeners(ctx context.Context) error {
	if err := a.rtmp.Start(ctx); err != nil {
		return err
	}
	if a.rtmps != nil {
		if err := a.rtmps.Start(ctx); err != nil {
			return fmt.Errorf("rtmps: %w", err)
		}
	}
	if a.srt != nil {
		if err := a.srt.Start(); err != nil {
			return err
		}
	}
	if a.rtsp != nil {
		if err := a.rtsp.Start(); err != nil {
			return err
		}
	}
	return a.rtc.Start()
}

// serveHTTP serves h on ln, over TLS with tlsCfg if it is set, until
// stopHTTP. Its error channel receives what serving ended with.
func (a *App) serveHTTP(ln net.Listener, h http.Handler, tlsCfg *tls.Config) (*http.Server, chan error) {
	if tlsCfg != nil {
		// Serving adds HTTP/2 to the config's NextProtos while RTMPS
		// handshakes read the node's shared one: a copy of its own.
		tlsCfg = tlsCfg.Clone()
	}
	srv := &http.Server{
		Handler:           connlimit.Requests(h),
		ConnContext:       connlimit.ConnContext,
		ConnState:         connlimit.IdleState(a.idleGrace()),
		ReadHeaderTimeout: a.cfg.HandshakeTimeout, // also bounds the TLS handshake
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		TLSConfig:         tlsCfg,
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate comes from tlsCfg
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	return srv, errc
}

// stopHTTP shuts down a server of serveHTTP, closing what is still open
// when ctx ends, and waits for it.
func stopHTTP(ctx context.Context, srv *http.Server, errc chan error) []error {
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, err, srv.Close())
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	return errs
}

// SRTAddr is the SRT listener's address, nil without one.
func (a *App) SRTAddr() net.Addr {
	if a.srt == nil {
		return nil
	}
	return a.srt.Addr()
}

// WebRTCUDPAddr is the address of the UDP socket WebRTC sessions share,
// nil when each has its own.
func (a *App) WebRTCUDPAddr() net.Addr { return a.rtc.UDPAddr() }

// WebRTCTCPAddr is the ICE-TCP listener's address, nil without one.
func (a *App) WebRTCTCPAddr() net.Addr { return a.rtc.TCPAddr() }

// RTMPAddr returns the bound RTMP address.
func (a *App) RTMPAddr() net.Addr { return a.rtmp.Addr() }

// HTTPAddr returns the bound HTTP address.
func (a *App) HTTPAddr() net.Addr { return a.httpLn.Addr() }

// RTMPSAddr returns the bound RTMPS address, or nil without TLS.
func (a *App) RTMPSAddr() net.Addr {
	if a.rtmps == nil {
		return nil
	}
	return a.rtmps.Addr()
}

// HTTPSAddr returns the bound HTTPS address, or nil without TLS.
func (a *App) HTTPSAddr() net.Addr {
	if a.httpsLn == nil {
		return nil
	}
	return a.httpsLn.Addr()
}

// rtmpConnections counts the open RTMP and RTMPS connections.
func (a *App) rtmpConnections() int {
	n := a.rtmp.Connections()
	if a.rtmps != nil {
		n += a.rtmps.Connections()
	}
	return n
}

// Close stops accepting work, ends every stream and waits for every
// connection to finish. It also releases a node whose Start failed.
func (a *App) Close() error {
	var errs []error
	a.Drain()         // peers stop choosing this node before its streams end
	a.push.Close()    // before the streams it reads end
	a.sources.Close() // their streams end
	a.trans.Close()   // its ffmpeg processes, before the streams they feed end
	a.stopEvents()
	if r := a.relays.Load(); r != nil {
		r.Close() // relayed streams end for their viewers
	}
	if a.srt != nil {
		a.srt.Close()
	}
	if a.rtsp != nil {
		a.rtsp.Close()
	}
	a.rtc.Close()
	a.Hub.Close()
	errs = append(errs, a.rtmp.Close())
	if a.rtmps != nil {
		errs = append(errs, a.rtmps.Close())
	}
	if a.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.flv.Close()
		a.hls.Close()
		errs = append(errs, stopHTTP(ctx, a.httpSrv, a.httpErr)...)
		if a.httpsSrv != nil {
			errs = append(errs, stopHTTP(ctx, a.httpsSrv, a.httpsErr)...)
		}
	}
	a.sender.Close()
	a.closeRecorder() // its last on_record_done go out with the webhooks' flush
	a.stopWebhooks()
	a.stopCluster()
	if a.ownRegistry {
		errs = append(errs, a.registry.Close())
	}
	errs = append(errs, a.vod.Close())
	a.peers.HTTP().CloseIdleConnections()
	return errors.Join(errs...)
}

// Handler returns the node's HTTP routes, each component registering its
// own, behind the front door's middleware.
func (a *App) Handler() http.Handler {
	mux := httpfront.NewMux()
	for _, c := range []interface{ Register(*httpfront.Mux) }{
		a.api, a.flv, a.hls, a.rtc, a.trans, a.vod, a.events, a.snap, push.Routes{M: a.push, Admin: a.api.Admin},
		source.Routes{M: a.sources, Admin: a.api.Admin},
		metrics.Endpoint{Registry: a.metrics, Ready: func() bool { return !a.draining.Load() }, Pprof: a.cfg.Pprof},
		web.Dashboard{URLs: func() string { return a.URLs("stream") }},
	} {
		c.Register(mux)
	}
	return httpfront.Wrap(mux, httpfront.Config{Origins: a.origins, TrustedProxies: a.cfg.TrustedNets()})
}

// nodeID is this node's ID once the node has started.
func (a *App) nodeID() string {
	if m := a.member.Load(); m != nil {
		return string(m.ID())
	}
	return a.cfg.NodeID
}

// Drain marks the node draining: /readyz answers 503, and the registry
// tells routers and relays to choose other nodes. Everything it serves
// goes on until Close.
func (a *App) Drain() {
	if a.draining.Swap(true) {
		return
	}
	if m := a.member.Load(); m != nil {
		m.Drain()
	}
	a.log.Info("draining: no longer ready for new work")
}

// Idle reports whether the node serves no stream at all.
func (a *App) Idle() bool { return len(a.Hub.List()) == 0 }

// URLs returns the publish and play URLs for a stream of app "live", for
// humans: printed at start-up and on the index page.
func (a *App) URLs(key string) string {
	ports := web.Ports{RTMP: port(a.RTMPAddr()), HTTP: port(a.HTTPAddr()), WebRTC: a.rtc != nil}
	if addr := a.SRTAddr(); addr != nil {
		ports.SRT = port(addr)
	}
	if addr := a.RTSPAddr(); addr != nil {
		ports.RTSP = port(addr)
	}
	if addr := a.RTMPSAddr(); addr != nil {
		ports.RTMPS = port(addr)
	}
	if addr := a.HTTPSAddr(); addr != nil {
		ports.HTTPS = port(addr)
	}
	return web.URLs(a.cfg.PublicHost, ports, key)
}

func port(addr net.Addr) string {
	_, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "0"
	}
	return p
}
