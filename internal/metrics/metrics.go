// Package metrics exposes a node's state to Prometheus. Nothing here runs
// on the media path: the Collector reads the node's components when
// Prometheus scrapes, and the only cost between scrapes is the atomic
// counters of stream.Counters and stream.Sender.
package metrics

import (
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Protocols of viewers, as the stream package counts readers.
const (
	ProtoRTMP   = "rtmp"
	ProtoFLV    = "flv" // HTTP-FLV and WebSocket-FLV
	ProtoHLS    = "hls"
	ProtoSRT    = "srt"
	ProtoWebRTC = "webrtc" // WHEP
	ProtoRTSP   = "rtsp"
	ProtoRelay  = "relay" // other nodes pulling a stream from this one
)

// viewerProtocols are the values of the protocol label of viewer series,
// always all present so dashboards see zeros rather than gaps.
var viewerProtocols = []string{ProtoRTMP, ProtoFLV, ProtoHLS, ProtoSRT, ProtoWebRTC, ProtoRTSP, ProtoRelay}

// connectionProtocols are the values of the protocol label of
// meshcast_connections.
var connectionProtocols = []string{ProtoRTMP, ProtoFLV, ProtoHLS}

// OtherStream is the stream label of the series summing every stream past
// the cardinality cap. Stream names always hold a '/', so no stream has it.
const OtherStream = "_other"

// DefaultMaxStreams is the default cardinality cap of per-stream series.
const DefaultMaxStreams = 100

// Streams lists a node's streams; *hub.Hub is one.
type Streams interface {
	List() []*stream.Stream
}

// Sources are the node's components the Collector reads at scrape time.
// Only Streams is required.
type Sources struct {
	Streams Streams
	// Sender writes to the node's RTMP and HTTP-FLV viewers (and to nodes
	// pulling relays): meshcast_sent_bytes_total.
	Sender *egress.Sender
	// Counters are the node-wide totals every stream adds to.
	Counters *stream.Counters
	// HLSViewers counts a stream's HLS viewers (hls.Server.Viewers).
	HLSViewers func(streamname.Name) int
	// RTMPConnections counts the RTMP server's open connections. Nil
	// counts the RTMP publishers and players attached to streams instead,
	// which leaves out connections still in their handshake.
	RTMPConnections func() int
	// RelayUpstreams counts the streams this node pulls from other nodes
	// (len of cluster.Relays.Active).
	RelayUpstreams func() int
	// MaxStreams caps the streams with series of their own: those with the
	// most viewers. The rest are summed under stream="_other". Negative
	// means DefaultMaxStreams; 0 sums every stream under "_other".
	MaxStreams int
}

// Collector is a prometheus.Collector of a node's streams, viewers and
// traffic, gathered at scrape time.
type Collector struct {
	src Sources

	connections    *prometheus.Desc
	publishers     *prometheus.Desc
	viewers        *prometheus.Desc
	streams        *prometheus.Desc
	received       *prometheus.Desc
	sent           *prometheus.Desc
	relayUpstreams *prometheus.Desc
	skips          *prometheus.Desc
	slowClosed     *prometheus.Desc

	streamBitrate  *prometheus.Desc
	streamFPS      *prometheus.Desc
	streamKeyframe *prometheus.Desc
	streamViewers  *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector reading src.
func NewCollector(src Sources) *Collector {
	if src.MaxStreams < 0 {
		src.MaxStreams = DefaultMaxStreams
	}
	d := prometheus.NewDesc
	proto := []string{"protocol"}
	return &Collector{
		src: src,
		connections: d("meshcast_connections",
			"Open client connections by protocol: rtmp (publishers and players), flv (HTTP-FLV viewers), hls (HLS viewers seen in the last 10 s).",
			proto, nil),
		publishers: d("meshcast_publishers",
			"Clients publishing a stream into this node (relays from other nodes not included).", nil, nil),
		viewers: d("meshcast_viewers",
			"Viewers of this node's streams by protocol; relay counts other nodes pulling a stream from this one.",
			proto, nil),
		streams: d("meshcast_streams",
			"Streams on this node: published here, relayed from another node, or waiting for their publisher to return.", nil, nil),
		received: d("meshcast_received_bytes_total",
			"Media payload bytes received from publishers and from relays of other nodes.", nil, nil),
		sent: d("meshcast_sent_bytes_total",
			"Bytes written to RTMP and HTTP-FLV viewers and to nodes pulling relays.", nil, nil),
		relayUpstreams: d("meshcast_relay_upstreams",
			"Streams this node pulls from another node of the cluster.", nil, nil),
		skips: d("meshcast_reader_skips_total",
			"Times a viewer fell too far behind live and skipped ahead to the newest keyframe.", nil, nil),
		slowClosed: d("meshcast_slow_readers_closed_total",
			"Viewers disconnected for falling behind live too often.", nil, nil),
		// Bytes, not bits: Prometheus's base unit (promtool refuses bits).
		streamBitrate: d("meshcast_stream_received_bytes_per_second",
			"A stream's measured input rate (media payload) over the last 5 s, in bytes per second: times 8 for its bitrate; stream=\"_other\" sums the streams past --metrics-max-streams.",
			[]string{"stream"}, nil),
		streamFPS: d("meshcast_stream_fps",
			"A stream's video frame rate, from its decoder configuration.", []string{"stream"}, nil),
		streamKeyframe: d("meshcast_stream_keyframe_interval_seconds",
			"Media time between a stream's last two video keyframes.", []string{"stream"}, nil),
		streamViewers: d("meshcast_stream_viewers",
			"A stream's viewers by protocol; stream=\"_other\" sums the streams past --metrics-max-streams.",
			[]string{"stream", "protocol"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.connections, c.publishers, c.viewers, c.streams, c.received, c.sent,
		c.relayUpstreams, c.skips, c.slowClosed,
		c.streamBitrate, c.streamFPS, c.streamKeyframe, c.streamViewers,
	} {
		ch <- d
	}
}

// streamSample is one stream as seen by one scrape.
type streamSample struct {
	name     string
	bitrate  int64 // bits per second
	fps      float64
	keyframe float64 // seconds; 0 when unknown
	viewers  map[string]int
	total    int
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}

	list := c.src.Streams.List()
	samples := make([]streamSample, 0, len(list))
	node := make(map[string]int, len(viewerProtocols))
	publishers, rtmpPublishers := 0, 0
	for _, s := range list {
		in := s.Info()
		sm := streamSample{name: string(in.Name), bitrate: in.BitrateBPS, viewers: make(map[string]int, len(viewerProtocols))}
		if in.Video != nil {
			sm.fps = in.Video.FPS
		}
		sm.keyframe = s.KeyframeInterval().Seconds()
		// The HLS muxer is one reader of the stream, however many clients
		// fetch its segments: the HLS server counts those.
		for _, p := range viewerProtocols {
			if p != ProtoHLS {
				sm.viewers[p] = in.Readers[p]
			}
		}
		if c.src.HLSViewers != nil {
			sm.viewers[ProtoHLS] = c.src.HLSViewers(in.Name)
		}
		for p, n := range sm.viewers {
			node[p] += n
			sm.total += n
		}
		if in.Live && in.Publisher.Protocol != ProtoRelay {
			publishers++
			if in.Publisher.Protocol == ProtoRTMP {
				rtmpPublishers++
			}
		}
		samples = append(samples, sm)
	}

	rtmpConns := node[ProtoRTMP] + rtmpPublishers
	if c.src.RTMPConnections != nil {
		rtmpConns = c.src.RTMPConnections()
	}
	gauge(c.connections, float64(rtmpConns), ProtoRTMP)
	gauge(c.connections, float64(node[ProtoFLV]), ProtoFLV)
	gauge(c.connections, float64(node[ProtoHLS]), ProtoHLS)
	gauge(c.publishers, float64(publishers))
	for _, p := range viewerProtocols {
		gauge(c.viewers, float64(node[p]), p)
	}
	gauge(c.streams, float64(len(list)))

	var received, skips, slow, sent uint64
	if ctr := c.src.Counters; ctr != nil {
		received, skips, slow = ctr.ReceivedBytes.Load(), ctr.Skips.Load(), ctr.SlowClosed.Load()
	}
	if c.src.Sender != nil {
		sent = c.src.Sender.BytesSent()
	}
	counter(c.received, received)
	counter(c.sent, sent)
	counter(c.skips, skips)
	counter(c.slowClosed, slow)
	relays := 0
	if c.src.RelayUpstreams != nil {
		relays = c.src.RelayUpstreams()
	}
	gauge(c.relayUpstreams, float64(relays))

	top, other := capStreams(samples, c.src.MaxStreams)
	for _, sm := range top {
		gauge(c.streamBitrate, float64(sm.bitrate)/8, sm.name)
		if sm.fps > 0 {
			gauge(c.streamFPS, sm.fps, sm.name)
		}
		if sm.keyframe > 0 {
			gauge(c.streamKeyframe, sm.keyframe, sm.name)
		}
		for _, p := range viewerProtocols {
			gauge(c.streamViewers, float64(sm.viewers[p]), sm.name, p)
		}
	}
	if other != nil {
		gauge(c.streamBitrate, float64(other.bitrate)/8, OtherStream)
		for _, p := range viewerProtocols {
			gauge(c.streamViewers, float64(other.viewers[p]), OtherStream, p)
		}
	}
}

// capStreams keeps the max streams with the most viewers (then the highest
// bitrate, then by name) and sums the rest into other, nil when there is no
// rest.
func capStreams(samples []streamSample, max int) (top []streamSample, other *streamSample) {
	if len(samples) <= max {
		return samples, nil
	}
	sort.Slice(samples, func(i, j int) bool {
		a, b := &samples[i], &samples[j]
		if a.total != b.total {
			return a.total > b.total
		}
		if a.bitrate != b.bitrate {
			return a.bitrate > b.bitrate
		}
		return a.name < b.name
	})
	other = &streamSample{name: OtherStream, viewers: make(map[string]int, len(viewerProtocols))}
	for _, sm := range samples[max:] {
		other.bitrate += sm.bitrate
		other.total += sm.total
		for p, n := range sm.viewers {
			other.viewers[p] += n
		}
	}
	return samples[:max], other
}

// NewRegistry returns a fresh Prometheus registry (not the global default)
// holding the Go runtime's and the process's collectors and cs.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}

// Handler serves reg's metrics in Prometheus's exposition formats.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}
