package push

import "github.com/prometheus/client_golang/prometheus"

var (
	pushesDesc = prometheus.NewDesc("meshcast_pushes",
		"Restreams running on this node, by state: connecting, pushing, waiting (to retry).",
		[]string{"state"}, nil)
	pushBytesDesc = prometheus.NewDesc("meshcast_push_bytes_sent_total",
		"Media bytes a restream running on this node sent to its target, by stream and push id.",
		[]string{"stream", "push"}, nil)
	pushReconnectsDesc = prometheus.NewDesc("meshcast_push_reconnects_total",
		"Times a restream running on this node connected again after its target failed, by stream and push id.",
		[]string{"stream", "push"}, nil)
)

// Collector reports the node's pushes to Prometheus. The targets are not
// labels: they hold stream keys, and the API says which id is which.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Manager }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pushesDesc
	ch <- pushBytesDesc
	ch <- pushReconnectsDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	states := map[string]int{"connecting": 0, "pushing": 0, "waiting": 0}
	for _, s := range c.m.All() {
		if _, ok := states[s.State]; ok {
			states[s.State]++
		}
		ch <- prometheus.MustNewConstMetric(pushBytesDesc, prometheus.CounterValue, float64(s.BytesSent), s.Stream, s.ID)
		ch <- prometheus.MustNewConstMetric(pushReconnectsDesc, prometheus.CounterValue, float64(s.Reconnects), s.Stream, s.ID)
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(pushesDesc, prometheus.GaugeValue, float64(n), state)
	}
}
