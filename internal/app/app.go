// Package app is meshcast's composition root: it builds every component from
// the configuration, starts them, and stops them in order.
package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/api"
	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/events"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/metrics"
	"github.com/meshcast/meshcast/internal/record"
	"github.com/meshcast/meshcast/internal/server/hls"
	"github.com/meshcast/meshcast/internal/server/httpflv"
	"github.com/meshcast/meshcast/internal/server/rtmp"
	"github.com/meshcast/meshcast/internal/server/srt"
	"github.com/meshcast/meshcast/internal/server/webrtc"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/tlsutil"
	"github.com/meshcast/meshcast/internal/transcode"
	"github.com/meshcast/meshcast/internal/web"
	"github.com/meshcast/meshcast/internal/webhook"
)

// App is one running meshcast node.
type App struct {
	cfg config.Config
	log *slog.Logger

	Hub    *hub.Hub
	sender *egress.Sender // writes to every RTMP and HTTP-FLV viewer
	rtmp   *rtmp.Server
	rtmps  *rtmp.Server // nil without a TLS certificate
	srt    *srt.Server  // nil without --srt-addr
	rtc    *webrtc.Server
	flv    *httpflv.Server
	hls    *hls.Server
	api    *api.API
	auth   *auth.Authorizer
	vod    *vodParts // nil without --vod-dir or recordings

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
	metrics http.Handler // GET /metrics

	tlsCfg   *tls.Config // HTTPS and RTMPS; nil without a TLS certificate
	httpsSrv *http.Server
	httpsLn  net.Listener
	httpsErr chan error

	events atomic.Pointer[events.Server] // Socket.IO events; set by Start

	peers *cluster.PeerClient // requests to other nodes: relay pulls, VOD copies, transcoding jobs

	httpPerIP *connlimit.PerIP // waiting HTTP connections per client address, for every HTTP listener

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
	a := &App{cfg: cfg, log: log}
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
		MaxSessionsPerIP: cfg.MaxViewersPerIP,
		Logger:           log,
	})
	sender := egress.NewSender(0)
	a.Hub, a.sender = h, sender
	az, err := auth.New(auth.Config{
		PublishAuth:    cfg.PublishAuth,
		PublishKeys:    cfg.PublishKeys,
		URLSecret:      cfg.URLSecret,
		SignedPlayApps: cfg.SignedPlayApps,
		Hook:           cfg.AuthHook,
		HookSecret:     cfg.AuthHookSecret,
		HookTimeout:    cfg.AuthHookTimeout,
		Node:           a.nodeID,
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	a.auth = az
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
	a.flv = httpflv.New(httpflv.Config{WriteTimeout: cfg.WriteTimeout, MergeWindow: cfg.WriteMerge(), Nagle: cfg.Nagle(), Sender: sender,
		AllowOrigin: func(o string) bool {
			return slices.Contains(cfg.CORSOrigins, "*") || slices.Contains(cfg.CORSOrigins, o)
		},
		Logger: log}, h)
	if a.rtc, err = webrtc.New(webrtc.Config{MaxSessions: cfg.MaxConnections, Opus: cfg.WebRTCOpus, FFmpeg: cfg.FFmpeg, Logger: log}, h); err != nil {
		return nil, err
	}
	a.hls = hls.New(hls.Config{SegmentDuration: cfg.HLSSegmentDuration, SegmentCount: cfg.HLSSegmentCount, LowLatency: cfg.HLSLowLatency, Logger: log}, h)
	mreg.MustRegister(metrics.NewCollector(metrics.Sources{Streams: h, Sender: sender, Counters: counters,
		HLSViewers: a.hls.Viewers, RelayUpstreams: a.relayUpstreams, MaxStreams: cfg.MetricsMaxStreams,
		RTMPConnections: a.rtmpConnections}))
	a.initLimits(mreg)
	a.metrics = metrics.Handler(mreg)
	sel, err := cluster.NewSelector(cfg.Balance)
	if err != nil {
		return nil, err
	}
	if err := a.initRecorder(mreg); err != nil {
		return nil, err
	}
	a.initTranscoder(mreg)
	a.api = api.New(h, map[string]api.ViewerCounter{"hls": a.hls}, a.registry, cluster.NewRouter(a.registry, sel), cfg.Redacted(), cfg.AdminToken)
	var recordings []string
	if a.recorder != nil {
		recordings = append(recordings, a.recorder.Dir())
	}
	if a.vod, err = a.newVOD(cfg, mreg, a.api.Admin, recordings...); err != nil {
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
	if err := a.startRTMP(ctx); err != nil {
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
	a.startWebhooks(a.member.Load().ID())
	a.startRecordHooks()
	a.startEvents(a.member.Load().ID())
	return nil
}

// startRTMP starts the RTMP server, and the RTMPS one if there is one. A
// server started is stopped by Close, even if the other failed to start.
func (a *App) startRTMP(ctx context.Context) error {
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
	return nil
}

// serveHTTP serves h on ln, over TLS with tlsCfg if it is set, until
// stopHTTP. Its error channel receives what serving ended with.
func (a *App) serveHTTP(ln net.Listener, h http.Handler, tlsCfg *tls.Config) (*http.Server, chan error) {
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
	a.Drain()       // peers stop choosing this node before its streams end
	a.trans.Close() // its ffmpeg processes, before the streams they feed end
	a.stopEvents()
	if r := a.relays.Load(); r != nil {
		r.Close() // relayed streams end for their viewers
	}
	if a.srt != nil {
		a.srt.Close()
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

// Handler returns the node's HTTP routes.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	a.api.Register(mux)
	mux.Handle("GET /metrics", a.metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if a.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET "+cluster.PullPath+"{app}/{stream}", a.servePull)
	a.trans.Register(mux)
	mux.HandleFunc("GET /{app}/{file}", a.serveFile)
	mux.HandleFunc("GET /{app}/{stream}/{file}", a.serveHLS)
	mux.HandleFunc("POST /{app}/{stream}/whep", a.serveWHEP)
	mux.HandleFunc("POST /{app}/{stream}/whip", a.serveWHIP)
	mux.HandleFunc("GET "+strings.TrimSuffix(webrtc.SessionPath, "/"), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(struct {
			Sessions []webrtc.SessionInfo `json:"sessions"`
		}{a.rtc.List()})
	})
	mux.HandleFunc("DELETE "+webrtc.SessionPath+"{id}", func(w http.ResponseWriter, r *http.Request) { a.rtc.ServeDelete(w, r, r.PathValue("id")) })
	page := web.Page(a.serveIndex)
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /watch/{app}/{stream}", page)
	mux.HandleFunc("GET /cluster", page)
	mux.HandleFunc("GET /publish", page)
	mux.Handle("GET "+web.AssetPrefix+"{file}", web.Assets())
	a.vod.lib.Register(mux)
	a.mountEvents(mux)
	if a.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/{$}", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/{profile}", pprof.Index) // heap, goroutine, allocs, ...
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	var h http.Handler = cors(a.cfg.CORSOrigins, mux)
	if nets := a.cfg.TrustedNets(); len(nets) > 0 {
		h = forwardedFor(nets, h)
	}
	return safePaths(h)
}

// cors lets pages of the allowed origins read responses in a browser
// ("*": any origin). Credentials (cookies) are never allowed: the admin API
// takes a bearer token, which a page must hold itself.
func cors(origins []string, next http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		origin := r.Header.Get("Origin")
		allowed := anyOrigin || (origin != "" && slices.Contains(origins, origin))
		switch {
		case anyOrigin:
			h.Set("Access-Control-Allow-Origin", "*")
		case allowed:
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
		case len(origins) > 0:
			h.Add("Vary", "Origin") // the answer differs by origin
		}
		if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Range")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorizePlay asks whether the client of r may play name over proto and
// answers the refusal itself: 401 or 403, or 410 for an expired URL.
func (a *App) authorizePlay(w http.ResponseWriter, r *http.Request, name streamname.Name, proto string) bool {
	_, err := a.auth.Check(r.Context(), auth.Request{
		Action: auth.Play, Name: name, Params: r.URL.Query(),
		Remote: auth.RemoteAddr(r.RemoteAddr), Protocol: proto,
	})
	if err != nil {
		a.log.Debug("play refused", "stream", name, "protocol", proto, "remote", r.RemoteAddr, "reason", err)
		http.Error(w, err.Error(), auth.StatusOf(err))
		return false
	}
	return true
}

// nodeID is this node's ID once the node has started.
func (a *App) nodeID() string {
	if m := a.member.Load(); m != nil {
		return string(m.ID())
	}
	return a.cfg.NodeID
}

// forwardedFor takes the client's address from X-Forwarded-For on requests
// from trusted proxies: the nearest address in it that is not a proxy.
func forwardedFor(trusted []netip.Prefix, next http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := netip.ParseAddrPort(r.RemoteAddr)
		xff := r.Header.Values("X-Forwarded-For")
		if err != nil || len(xff) == 0 || !isTrusted(peer.Addr()) {
			next.ServeHTTP(w, r)
			return
		}
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a forged or garbled hop: trust nothing before it
			}
			if !isTrusted(a) || i == 0 {
				r.RemoteAddr = netip.AddrPortFrom(a.Unmap(), 0).String()
				break
			}
		}
		next.ServeHTTP(w, r)
	})
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

// serveFile answers /APP/STREAM.flv and /APP/STREAM.m3u8.
func (a *App) serveFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	switch {
	case strings.HasSuffix(file, ".flv"):
		name, err := streamname.New(r.PathValue("app"), strings.TrimSuffix(file, ".flv"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if !a.authorizePlay(w, r, name, "http-flv") {
			return
		}
		a.flv.ServeStream(w, r, name)
	case strings.HasSuffix(file, ".m3u8"):
		name, err := streamname.New(r.PathValue("app"), strings.TrimSuffix(file, ".m3u8"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		target := "/" + string(name) + "/index.m3u8"
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusFound)
	default:
		http.NotFound(w, r)
	}
}

// serveHLS answers /APP/STREAM/FILE for HLS playlists and segments.
func (a *App) serveHLS(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !a.authorizePlay(w, r, name, "hls") {
		return
	}
	if r.PathValue("file") == "master.m3u8" {
		a.serveMaster(w, r, name)
		return
	}
	a.hls.ServeStream(w, r, name, r.PathValue("file"))
}

// serveWHEP answers a WHEP offer for a stream (WebRTC playback).
func (a *App) serveWHEP(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !a.authorizePlay(w, r, name, "webrtc") {
		return
	}
	if s := a.Hub.Get(name); s != nil {
		if v := s.Info().Video; v != nil && v.Codec != media.CodecH264.String() {
			http.Error(w, "the stream's video is "+v.Codec+": WebRTC playback takes H.264; play it over HLS, RTMP or HTTP-FLV", http.StatusUnsupportedMediaType)
			return
		}
	}
	a.rtc.ServeWHEP(w, r, name)
}

// serveWHIP answers a WHIP offer: a WebRTC publisher, admitted like any
// other (publish keys as ?key=KEY, signed tokens, the hook).
func (a *App) serveWHIP(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	grant, err := a.auth.Check(r.Context(), auth.Request{
		Action: auth.Publish, Name: name, Params: r.URL.Query(),
		Remote: auth.RemoteAddr(r.RemoteAddr), Protocol: "webrtc",
	})
	if err != nil {
		a.log.Info("publish refused", "stream", name, "protocol", "webrtc", "remote", r.RemoteAddr, "reason", err)
		http.Error(w, err.Error(), auth.StatusOf(err))
		return
	}
	a.rtc.ServeWHIP(w, r, name, func(name streamname.Name, remote string) (webrtc.Publisher, error) {
		return a.Hub.Publish(name, stream.PublisherInfo{Protocol: "webrtc", RemoteAddr: remote, Credential: grant.Credential})
	})
}

// serveIndex answers / when the binary was built without its dashboard:
// how to build it, and the node's URLs.
func (a *App) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.URL.Path != "/" {
		w.WriteHeader(http.StatusNotFound)
	}
	fmt.Fprintf(w, "meshcast\n\nThis binary was built without its web dashboard. Build the dashboard, then meshcast:\n"+
		"  npm ci && npm run build && go build ./cmd/meshcast\n(make run does all of this.)\n\n%s", a.URLs("stream"))
}

// URLs returns the publish and play URLs for a stream of app "live", for
// humans: printed at start-up and on the index page.
func (a *App) URLs(key string) string {
	host := a.cfg.PublicHost
	if host == "" {
		host = "localhost"
	}
	rtmpURL := "rtmp://" + net.JoinHostPort(host, port(a.RTMPAddr()))
	httpURL := "http://" + net.JoinHostPort(host, port(a.HTTPAddr()))
	var rtmpsURL, httpsURL string // with TLS
	if addr := a.RTMPSAddr(); addr != nil {
		rtmpsURL = "rtmps://" + net.JoinHostPort(host, port(addr))
	}
	if addr := a.HTTPSAddr(); addr != nil {
		httpsURL = "https://" + net.JoinHostPort(host, port(addr))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Publish:\n")
	fmt.Fprintf(&b, "  ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -b:v 2000k -g 60 -c:a aac -b:a 128k -f flv %s/live/%s\n", rtmpURL, key)
	fmt.Fprintf(&b, "  OBS: server %s/live, stream key %s\n", rtmpURL, key)
	if rtmpsURL != "" {
		fmt.Fprintf(&b, "  RTMPS: %s/live/%s (OBS: server %s/live)\n", rtmpsURL, key, rtmpsURL)
	}
	fmt.Fprintf(&b, "Play:\n")
	fmt.Fprintf(&b, "  RTMP:     %s/live/%s\n", rtmpURL, key)
	if rtmpsURL != "" {
		fmt.Fprintf(&b, "  RTMPS:    %s/live/%s\n", rtmpsURL, key)
	}
	fmt.Fprintf(&b, "  HTTP-FLV: %s/live/%s.flv\n", httpURL, key)
	if httpsURL != "" {
		fmt.Fprintf(&b, "            %s/live/%s.flv\n", httpsURL, key)
	}
	fmt.Fprintf(&b, "  HLS:      %s/live/%s.m3u8\n", httpURL, key)
	if httpsURL != "" {
		fmt.Fprintf(&b, "            %s/live/%s.m3u8\n", httpsURL, key)
	}
	fmt.Fprintf(&b, "API:\n")
	fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpURL)
	if httpsURL != "" {
		fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpsURL)
	}
	return b.String()
}

func port(addr net.Addr) string {
	_, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "0"
	}
	return p
}
