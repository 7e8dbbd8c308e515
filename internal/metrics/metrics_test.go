package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// scrape gathers reg and indexes the samples by name and labels, e.g.
// `meshcast_viewers{protocol="rtmp"}`; histograms give _count and _sum.
func scrape(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			key := func(suffix string) string {
				k := mf.GetName() + suffix
				if len(labels) > 0 {
					k += "{" + strings.Join(labels, ",") + "}"
				}
				return k
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// want checks that the scrape has series with value v.
func want(t *testing.T, got map[string]float64, series string, v float64) {
	t.Helper()
	g, ok := got[series]
	if !ok {
		t.Errorf("%s missing from the scrape", series)
		return
	}
	if math.Abs(g-v) > 1e-9 {
		t.Errorf("%s = %v, want %v", series, g, v)
	}
}

func absent(t *testing.T, got map[string]float64, series string) {
	t.Helper()
	if v, ok := got[series]; ok {
		t.Errorf("%s = %v, want no such series", series, v)
	}
}

// publish starts name on h and writes two keyframes gapMS apart with
// payloads totalling bytes; the stream's publisher is returned.
func publish(t *testing.T, h *hub.Hub, name string, bytes, gapMS int) *stream.Publisher {
	t.Helper()
	pub, err := h.Publish(streamname.Name(name), stream.PublisherInfo{Protocol: "rtmp", RemoteAddr: "192.0.2.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	half := bytes / 2
	for i, dts := range []int64{0, int64(gapMS)} {
		n := half
		if i == 1 {
			n = bytes - half
		}
		if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, DTS: dts, Payload: make([]byte, n)}); err != nil {
			t.Fatal(err)
		}
	}
	return pub
}

// readers attaches n readers of proto to name.
func readers(t *testing.T, h *hub.Hub, name, proto string, n int) {
	t.Helper()
	for range n {
		r, err := h.NewReader(streamname.Name(name), proto)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
	}
}

// nextSecond waits until the wall clock's second has changed since
// start, so a stream's rate meter counts what was written up to start.
func nextSecond(start time.Time) {
	for time.Now().Unix() == start.Unix() {
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMetricsCardinalityCap(t *testing.T) {
	ctr := new(stream.Counters)
	h := hub.New(hub.Config{Stream: stream.Config{Counters: ctr}})
	t.Cleanup(h.Close)

	// Five streams; by viewers: e (5 hls), b (3 rtmp), a (1 srt, 1 webrtc),
	// d (2), c (1).
	sizes := map[string]int{"live/a": 10000, "live/b": 20000, "live/c": 30000, "live/d": 40000, "live/e": 50000}
	for name, size := range sizes {
		publish(t, h, name, size, 2000)
	}
	readers(t, h, "live/b", "rtmp", 3)
	readers(t, h, "live/c", "flv", 1)
	readers(t, h, "live/d", "rtmp", 1)
	readers(t, h, "live/d", "relay", 1)
	readers(t, h, "live/a", "srt", 1)
	readers(t, h, "live/a", "webrtc", 1)
	readers(t, h, "live/e", "hls", 1) // the HLS muxer: one reader, not a viewer
	hlsViewers := map[streamname.Name]int{"live/e": 5}
	nextSecond(time.Now())

	c := NewCollector(Sources{
		Streams:    h,
		Counters:   ctr,
		HLSViewers: func(n streamname.Name) int { return hlsViewers[n] },
		MaxStreams: 2,
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	got := scrape(t, reg)

	rate := func(bytes int) float64 { return float64(bytes*8/5) / 8 } // the meter averages 5 s, in bits
	// The two streams with the most viewers have their own series.
	want(t, got, `meshcast_stream_received_bytes_per_second{stream="live/e"}`, rate(50000))
	want(t, got, `meshcast_stream_received_bytes_per_second{stream="live/b"}`, rate(20000))
	want(t, got, `meshcast_stream_viewers{protocol="hls",stream="live/e"}`, 5)
	want(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="live/e"}`, 0)
	want(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="live/b"}`, 3)
	want(t, got, `meshcast_stream_keyframe_interval_seconds{stream="live/e"}`, 2)
	want(t, got, `meshcast_stream_keyframe_interval_seconds{stream="live/b"}`, 2)
	// The rest are summed under _other.
	for _, name := range []string{"live/a", "live/c", "live/d"} {
		absent(t, got, fmt.Sprintf(`meshcast_stream_received_bytes_per_second{stream=%q}`, name))
		absent(t, got, fmt.Sprintf(`meshcast_stream_viewers{protocol="rtmp",stream=%q}`, name))
		absent(t, got, fmt.Sprintf(`meshcast_stream_keyframe_interval_seconds{stream=%q}`, name))
	}
	want(t, got, `meshcast_stream_received_bytes_per_second{stream="_other"}`, rate(10000)+rate(30000)+rate(40000))
	want(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="_other"}`, 1)
	want(t, got, `meshcast_stream_viewers{protocol="flv",stream="_other"}`, 1)
	want(t, got, `meshcast_stream_viewers{protocol="relay",stream="_other"}`, 1)
	want(t, got, `meshcast_stream_viewers{protocol="hls",stream="_other"}`, 0)
	want(t, got, `meshcast_stream_viewers{protocol="srt",stream="_other"}`, 1)
	want(t, got, `meshcast_stream_viewers{protocol="webrtc",stream="_other"}`, 1)
	absent(t, got, `meshcast_stream_keyframe_interval_seconds{stream="_other"}`)
	absent(t, got, `meshcast_stream_fps{stream="_other"}`)

	// Node totals cover every stream, capped or not.
	want(t, got, `meshcast_streams`, 5)
	want(t, got, `meshcast_publishers`, 5)
	want(t, got, `meshcast_viewers{protocol="rtmp"}`, 4)
	want(t, got, `meshcast_viewers{protocol="flv"}`, 1)
	want(t, got, `meshcast_viewers{protocol="hls"}`, 5)
	want(t, got, `meshcast_viewers{protocol="srt"}`, 1)
	want(t, got, `meshcast_viewers{protocol="webrtc"}`, 1)
	want(t, got, `meshcast_viewers{protocol="relay"}`, 1)
	want(t, got, `meshcast_connections{protocol="rtmp"}`, 4+5) // players and publishers
	want(t, got, `meshcast_connections{protocol="flv"}`, 1)
	want(t, got, `meshcast_connections{protocol="hls"}`, 5)
	want(t, got, `meshcast_received_bytes_total`, 150000)
	want(t, got, `meshcast_relay_upstreams`, 0)

	// Series per stream stay bounded: 2 streams and _other, a series per
	// protocol each.
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "meshcast_stream_viewers{") {
			n++
		}
	}
	if want := 3 * len(viewerProtocols); n != want {
		t.Errorf("%d meshcast_stream_viewers series, want %d", n, want)
	}
}

func TestMetricsCapZeroAndUncapped(t *testing.T) {
	h := hub.New(hub.Config{})
	t.Cleanup(h.Close)
	publish(t, h, "live/a", 1000, 1000)
	publish(t, h, "live/b", 1000, 1000)

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(Sources{Streams: h, MaxStreams: 0}))
	got := scrape(t, reg)
	want(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="_other"}`, 0)
	absent(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="live/a"}`)

	reg = prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(Sources{Streams: h, MaxStreams: 2}))
	got = scrape(t, reg)
	want(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="live/a"}`, 0)
	want(t, got, `meshcast_stream_keyframe_interval_seconds{stream="live/b"}`, 1)
	absent(t, got, `meshcast_stream_viewers{protocol="rtmp",stream="_other"}`)
}

// Node counters keep growing as streams come and go: they are not sums over
// the streams live now.
func TestMetricsCountersMonotonic(t *testing.T) {
	ctr := new(stream.Counters)
	h := hub.New(hub.Config{Stream: stream.Config{Counters: ctr, MaxLag: time.Second, MaxSkips: 1}})
	t.Cleanup(h.Close)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(Sources{Streams: h, Counters: ctr}))

	// A reader that falls behind skips once, then is closed as slow.
	pub, err := h.Publish("live/a", stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.NewReader("live/a", "rtmp")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	write := func(dts int64, key bool) {
		t.Helper()
		if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: key, DTS: dts, Payload: make([]byte, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	write(0, true)
	write(500, false)
	write(2000, true) // the reader at 0 is 2 s behind: it skips here
	if _, err := r.ReadPackets(ctx, nil); err != nil {
		t.Fatalf("first read: %v", err)
	}
	write(2500, false)
	if _, err := r.ReadPackets(ctx, nil); err != nil {
		t.Fatalf("second read: %v", err)
	}
	write(3000, false)
	write(4500, true) // behind again: a second skip, one too many
	if _, err := r.ReadPackets(ctx, nil); !errors.Is(err, stream.ErrSlowReader) {
		t.Fatalf("third read: %v, want ErrSlowReader", err)
	}
	r.Close()
	got := scrape(t, reg)
	want(t, got, `meshcast_received_bytes_total`, 600)
	want(t, got, `meshcast_reader_skips_total`, 2)
	want(t, got, `meshcast_slow_readers_closed_total`, 1)
	want(t, got, `meshcast_streams`, 1)

	// The stream ends (no grace): its counts stay in the totals.
	pub.Close()
	got = scrape(t, reg)
	want(t, got, `meshcast_streams`, 0)
	want(t, got, `meshcast_publishers`, 0)
	want(t, got, `meshcast_received_bytes_total`, 600)
	want(t, got, `meshcast_reader_skips_total`, 2)
	want(t, got, `meshcast_slow_readers_closed_total`, 1)

	// Another stream adds to them.
	publish(t, h, "live/b", 1000, 2000)
	got = scrape(t, reg)
	want(t, got, `meshcast_received_bytes_total`, 1600)
	want(t, got, `meshcast_streams`, 1)
}

// The registry NewRegistry builds passes Prometheus's own consistency
// checks, with the Go and process collectors alongside the node's.
func TestMetricsRegistry(t *testing.T) {
	h := hub.New(hub.Config{})
	t.Cleanup(h.Close)
	publish(t, h, "live/a", 1000, 2000)
	reg := NewRegistry(NewCollector(Sources{Streams: h, MaxStreams: -1, RelayUpstreams: func() int { return 3 }}))
	InstrumentRegistry(nil, reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	sort.Strings(names)
	for _, w := range []string{"go_goroutines", "process_cpu_seconds_total", "meshcast_streams", "meshcast_registry_errors_total", "meshcast_registry_request_duration_seconds"} {
		if _, ok := sort.Find(len(names), func(i int) int { return strings.Compare(w, names[i]) }); !ok {
			t.Errorf("%s missing from %v", w, names)
		}
	}
	got := scrape(t, reg)
	want(t, got, `meshcast_relay_upstreams`, 3)
	want(t, got, `meshcast_registry_errors_total{op="claim"}`, 0)
}
