// Package app is meshcast's composition root: it builds every component from
// the configuration, starts them, and stops them in order.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/api"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/events"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/metrics"
	"github.com/meshcast/meshcast/internal/server/hls"
	"github.com/meshcast/meshcast/internal/server/httpflv"
	"github.com/meshcast/meshcast/internal/server/rtmp"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/webhook"
)

// App is one running meshcast node.
type App struct {
	cfg config.Config
	log *slog.Logger

	Hub    *hub.Hub
	sender *stream.Sender // writes to every RTMP and HTTP-FLV viewer
	rtmp   *rtmp.Server
	flv    *httpflv.Server
	hls    *hls.Server
	api    *api.API

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

	events atomic.Pointer[events.Server] // Socket.IO events; set by Start

	httpPerIP *connlimit.PerIP // HTTP connections per client address, for every HTTP listener
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
		PublisherGrace: cfg.PublisherGrace,
		Stream:         stream.Config{MaxLag: cfg.MaxLag, Counters: counters},
		Owner:          owner{a},
		Upstream:       upstream{a},
		Logger:         log,
	})
	sender := stream.NewSender(0)
	a.Hub, a.sender = h, sender
	a.rtmp = rtmp.New(rtmpLimits(cfg, rtmp.Config{
		Addr:           cfg.RTMPAddr,
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		MaxConnections: cfg.MaxConnections,
		MergeWindow:    cfg.WriteMerge(),
		Sender:         sender,
		TrustedProxies: cfg.TrustedNets(),
		Logger:         log,
	}), h)
	a.flv = httpflv.New(httpflv.Config{WriteTimeout: cfg.WriteTimeout, MergeWindow: cfg.WriteMerge(), Sender: sender, Logger: log}, h)
	a.hls = hls.New(hls.Config{SegmentDuration: cfg.HLSSegmentDuration, SegmentCount: cfg.HLSSegmentCount, Logger: log}, h)
	mreg.MustRegister(metrics.NewCollector(metrics.Sources{Streams: h, Sender: sender, Counters: counters,
		HLSViewers: a.hls.Viewers, RelayUpstreams: a.relayUpstreams, MaxStreams: cfg.MetricsMaxStreams,
		RTMPConnections: a.rtmp.Connections}))
	a.initLimits(mreg)
	a.metrics = metrics.Handler(mreg)
	sel, err := cluster.NewSelector(cfg.Balance)
	if err != nil {
		return nil, err
	}
	a.api = api.New(h, map[string]api.ViewerCounter{"hls": a.hls}, a.registry, cluster.NewRouter(a.registry, sel), cfg.Redacted(), cfg.AdminToken)
	return a, nil
}

// Start binds the listeners and serves until Close.
func (a *App) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http: listen: %w", err)
	}
	ln = connlimit.NewListener(ln, a.httpPerIP, "http", a.log)
	if err := a.rtmp.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	a.httpLn = ln
	a.httpSrv = &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: a.cfg.HandshakeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.httpErr = make(chan error, 1)
	go func() { a.httpErr <- a.httpSrv.Serve(ln) }()
	a.startCluster()
	a.startWebhooks(a.member.Load().ID())
	a.startEvents(a.member.Load().ID())
	return nil
}

// RTMPAddr returns the bound RTMP address.
func (a *App) RTMPAddr() net.Addr { return a.rtmp.Addr() }

// HTTPAddr returns the bound HTTP address.
func (a *App) HTTPAddr() net.Addr { return a.httpLn.Addr() }

// Close stops accepting work, ends every stream and waits for every
// connection to finish. It also releases a node whose Start failed.
func (a *App) Close() error {
	var errs []error
	a.Drain() // peers stop choosing this node before its streams end
	a.stopEvents()
	if r := a.relays.Load(); r != nil {
		r.Close() // relayed streams end for their viewers
	}
	a.Hub.Close()
	errs = append(errs, a.rtmp.Close())
	if a.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.flv.Close()
		a.hls.Close()
		if err := a.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, err, a.httpSrv.Close())
		}
		if err := <-a.httpErr; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	a.sender.Close()
	a.stopWebhooks()
	a.stopCluster()
	if a.ownRegistry {
		errs = append(errs, a.registry.Close())
	}
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
	mux.HandleFunc("GET /{app}/{file}", a.serveFile)
	mux.HandleFunc("GET /{app}/{stream}/{file}", a.serveHLS)
	mux.HandleFunc("GET /{$}", a.serveIndex)
	a.mountEvents(mux)
	if a.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/{$}", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/{profile}", pprof.Index) // heap, goroutine, allocs, ...
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if nets := a.cfg.TrustedNets(); len(nets) > 0 {
		return safePaths(forwardedFor(nets, mux))
	}
	return safePaths(mux)
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
		name, err := stream.NewName(r.PathValue("app"), strings.TrimSuffix(file, ".flv"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		a.flv.ServeStream(w, r, name)
	case strings.HasSuffix(file, ".m3u8"):
		name, err := stream.NewName(r.PathValue("app"), strings.TrimSuffix(file, ".m3u8"))
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
	name, err := stream.NewName(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.hls.ServeStream(w, r, name, r.PathValue("file"))
}

func (a *App) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "meshcast\n\n%s", a.URLs("stream"))
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
	var b strings.Builder
	fmt.Fprintf(&b, "Publish:\n")
	fmt.Fprintf(&b, "  ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -b:v 2000k -g 60 -c:a aac -b:a 128k -f flv %s/live/%s\n", rtmpURL, key)
	fmt.Fprintf(&b, "  OBS: server %s/live, stream key %s\n", rtmpURL, key)
	fmt.Fprintf(&b, "Play:\n")
	fmt.Fprintf(&b, "  RTMP:     %s/live/%s\n", rtmpURL, key)
	fmt.Fprintf(&b, "  HTTP-FLV: %s/live/%s.flv\n", httpURL, key)
	fmt.Fprintf(&b, "  HLS:      %s/live/%s.m3u8\n", httpURL, key)
	fmt.Fprintf(&b, "API:\n")
	fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpURL)
	return b.String()
}

func port(addr net.Addr) string {
	_, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "0"
	}
	return p
}
