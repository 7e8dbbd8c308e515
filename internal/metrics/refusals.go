package metrics

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/connlimit"
)

// refusedDesc describes meshcast_connections_refused_total.
var refusedDesc = prometheus.NewDesc("meshcast_connections_refused_total",
	"Connections and sessions closed or refused by a limit: max_connections at connect; per_ip connections waiting "+
		"(handshake, request headers, idle keep-alive) past --max-connections-per-ip; handshake_timeout did not publish "+
		"or play within --handshake-timeout; viewers_per_ip sessions past --max-viewers-per-ip.",
	[]string{"protocol", "reason"}, nil)

// sessionProtocols are the protocols whose sessions count against
// --max-viewers-per-ip, each exported even before its first refusal.
var sessionProtocols = []string{"rtmp", "rtmps", "flv", "ws-flv", "srt", "webrtc", "rtsp"}

// RefusalSources are the counts meshcast_connections_refused_total
// reports, read at scrape time.
type RefusalSources struct {
	// Listeners are the refusals of the RTMP listeners, by protocol
	// ("rtmp", "rtmps"): rtmp.Server.Refusals.
	Listeners map[string]func() connlimit.Refusals
	// HTTPPerIP counts the HTTP connections refused or closed at
	// --max-connections-per-ip (connlimit.PerIP.Refused).
	HTTPPerIP func() uint64
	// Sessions counts the sessions refused at --max-viewers-per-ip, by
	// protocol (hub.SessionRefusals).
	Sessions func() map[string]uint64
}

// Refusals collects meshcast_connections_refused_total.
type Refusals struct{ src RefusalSources }

var _ prometheus.Collector = Refusals{}

// NewRefusals returns a collector of src's refusals.
func NewRefusals(src RefusalSources) Refusals { return Refusals{src} }

// Describe implements prometheus.Collector.
func (r Refusals) Describe(ch chan<- *prometheus.Desc) { ch <- refusedDesc }

// Collect implements prometheus.Collector.
func (r Refusals) Collect(ch chan<- prometheus.Metric) {
	count := func(proto, reason string, n uint64) {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(n), proto, reason)
	}
	for _, proto := range slices.Sorted(maps.Keys(r.src.Listeners)) {
		n := r.src.Listeners[proto]()
		count(proto, "max_connections", n.MaxConnections)
		count(proto, "per_ip", n.PerIP)
		count(proto, "handshake_timeout", n.HandshakeTimeout)
	}
	if r.src.HTTPPerIP != nil {
		count("http", "per_ip", r.src.HTTPPerIP())
	}
	if r.src.Sessions == nil {
		return
	}
	sessions := r.src.Sessions()
	for _, proto := range sessionProtocols {
		count(proto, "viewers_per_ip", sessions[proto])
	}
	for proto, n := range sessions {
		if !slices.Contains(sessionProtocols, proto) {
			count(proto, "viewers_per_ip", n)
		}
	}
}
