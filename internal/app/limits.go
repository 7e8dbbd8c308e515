package app

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/server/rtmp"
)

// idleTimeout closes an HTTP keep-alive connection with no request for
// this long.
const idleTimeout = 60 * time.Second

// rtmpLimits sets the RTMP server's connection limits from cfg.
func rtmpLimits(cfg config.Config, rc rtmp.Config) rtmp.Config {
	rc.MaxConnectionsPerIP = cfg.MaxConnectionsPerIP
	rc.HandshakeTimeout = cfg.HandshakeTimeout
	return rc
}

// initLimits makes the HTTP per-address limit, shared by the node's HTTP
// listeners, and exports what the limits refuse as
// meshcast_connections_refused_total.
func (a *App) initLimits(reg prometheus.Registerer) {
	a.httpPerIP = connlimit.NewPerIP(a.cfg.MaxConnectionsPerIP)
	refused := func(proto, reason string, count func() uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "meshcast_connections_refused_total",
			Help:        "Connections closed by a limit: max_connections and per_ip refused at connect, handshake_timeout did not publish or play within --handshake-timeout.",
			ConstLabels: prometheus.Labels{"protocol": proto, "reason": reason},
		}, func() float64 { return float64(count()) }))
	}
	refused("rtmp", "max_connections", func() uint64 { return a.rtmp.Refusals().MaxConnections })
	refused("rtmp", "per_ip", func() uint64 { return a.rtmp.Refusals().PerIP })
	refused("rtmp", "handshake_timeout", func() uint64 { return a.rtmp.Refusals().HandshakeTimeout })
	refused("http", "per_ip", a.httpPerIP.Refused)
}

// safePaths answers 400 to a request whose path, once decoded, has a "."
// or ".." segment, a backslash or a control byte, before any route sees
// it. Without it the mux would redirect dot segments to the cleaned path;
// no route serves files by path, but such a request is never a player's.
func safePaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !safePath(r.URL.Path) {
			http.Error(w, "bad request path", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func safePath(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
