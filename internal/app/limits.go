package app

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/metrics"
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
	listeners := map[string]func() connlimit.Refusals{"rtmp": a.rtmp.Refusals}
	if a.rtmps != nil {
		listeners["rtmps"] = a.rtmps.Refusals
	}
	if a.rtsp != nil {
		listeners["rtsp"] = a.rtspRefusals
	}
	reg.MustRegister(metrics.NewRefusals(metrics.RefusalSources{
		Listeners: listeners,
		HTTPPerIP: a.httpPerIP.Refused,
		Sessions:  a.Hub.SessionRefusals,
	}))
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
