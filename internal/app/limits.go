package app

import (
	"net/http"
	"slices"
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
	reg.MustRegister(refusals{a})
}

// listenerConfig is the per-address limit's configuration for an HTTP
// listener named proto. A trusted proxy's connections carry many clients:
// they are not limited (their clients' sessions are, by X-Forwarded-For).
func (a *App) listenerConfig(proto string) connlimit.ListenerConfig {
	return connlimit.ListenerConfig{Proto: proto, Grace: connlimit.Grace(a.cfg.HandshakeTimeout), Trusted: a.cfg.TrustedNets(), Logger: a.log}
}

// idleGrace is how long an HTTP keep-alive connection may go without a
// request before it counts against --max-connections-per-ip: twice the HLS
// segment duration, so HLS players polling behind one address never count.
func (a *App) idleGrace() time.Duration { return 2 * a.cfg.HLSSegmentDuration }

// refusedDesc describes meshcast_connections_refused_total.
var refusedDesc = prometheus.NewDesc("meshcast_connections_refused_total",
	"Connections and sessions closed or refused by a limit: max_connections at connect; per_ip connections waiting "+
		"(handshake, request headers, idle keep-alive) past --max-connections-per-ip; handshake_timeout did not publish "+
		"or play within --handshake-timeout; viewers_per_ip sessions past --max-viewers-per-ip.",
	[]string{"protocol", "reason"}, nil)

// sessionProtocols are the protocols whose sessions count against
// --max-viewers-per-ip, each exported even before its first refusal.
var sessionProtocols = []string{"rtmp", "rtmps", "flv", "ws-flv", "srt", "webrtc"}

// refusals collects meshcast_connections_refused_total from the servers'
// and the hub's counts.
type refusals struct{ a *App }

func (r refusals) Describe(ch chan<- *prometheus.Desc) { ch <- refusedDesc }

func (r refusals) Collect(ch chan<- prometheus.Metric) {
	count := func(proto, reason string, n uint64) {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(n), proto, reason)
	}
	servers := map[string]*rtmp.Server{"rtmp": r.a.rtmp, "rtmps": r.a.rtmps}
	for proto, s := range servers {
		if s == nil {
			continue
		}
		n := s.Refusals()
		count(proto, "max_connections", n.MaxConnections)
		count(proto, "per_ip", n.PerIP)
		count(proto, "handshake_timeout", n.HandshakeTimeout)
	}
	count("http", "per_ip", r.a.httpPerIP.Refused())
	sessions := r.a.Hub.SessionRefusals()
	for _, proto := range sessionProtocols {
		count(proto, "viewers_per_ip", sessions[proto])
	}
	for proto, n := range sessions {
		if !slices.Contains(sessionProtocols, proto) {
			count(proto, "viewers_per_ip", n)
		}
	}
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
