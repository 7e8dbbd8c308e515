package record

import "github.com/prometheus/client_golang/prometheus"

// Collectors are the recorder's metrics, read at scrape time:
// meshcast_recordings_active, meshcast_recording_bytes_total,
// meshcast_recordings_finished_total and meshcast_recordings_failed_total.
func (r *Recorder) Collectors() []prometheus.Collector {
	stat := func(f func(Stats) float64) func() float64 {
		return func() float64 { return f(r.Stats()) }
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshcast_recordings_active",
			Help: "Recordings being written to --record-dir.",
		}, stat(func(s Stats) float64 { return float64(s.Active) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshcast_recording_bytes_total",
			Help: "Bytes written to recordings.",
		}, stat(func(s Stats) float64 { return float64(s.Bytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshcast_recordings_finished_total",
			Help: "Recordings finished (renamed to .flv), those recovered after a crash included.",
		}, stat(func(s Stats) float64 { return float64(s.Finished) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshcast_recordings_failed_total",
			Help: "Recordings ended early by an error: a disk too slow for the stream, or a write error.",
		}, stat(func(s Stats) float64 { return float64(s.Failed) })),
	}
}
