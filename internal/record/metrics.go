package record

import "github.com/prometheus/client_golang/prometheus"

// Collectors are the recorder's metrics, read at scrape time:
// meshcast_recordings_active, meshcast_recording_bytes_total,
// meshcast_recordings_finished_total and meshcast_recordings_failed_total
// (by reason).
func (r *Recorder) Collectors() []prometheus.Collector {
	stat := func(f func(Stats) float64) func() float64 {
		return func() float64 { return f(r.Stats()) }
	}
	cs := []prometheus.Collector{
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
	}
	for _, reason := range Reasons {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "meshcast_recordings_failed_total",
			Help:        "Recordings ended early by an error, by reason: disk_full (no room left), slow_disk (a disk too slow for the stream) or io_error.",
			ConstLabels: prometheus.Labels{"reason": string(reason)},
		}, stat(func(s Stats) float64 { return float64(s.FailedBy[reason]) })))
	}
	return cs
}
