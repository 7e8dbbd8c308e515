package cache

import "github.com/prometheus/client_golang/prometheus"

// Collector returns a prometheus.Collector of the cache's Stats, for the
// caller to register. Its series, named after Config.MetricsPrefix (P) and
// labelled with Config.MetricsLabels, are read when Prometheus scrapes:
//
//	P_hits_total, P_misses_total, P_coalesced_total   Get calls (Stats)
//	P_fetches_total, P_fetch_errors_total            calls of fetch, failed ones
//	P_evictions_total, P_too_large_total             entries evicted, values not stored
//	P_l2_hits_total, P_l2_misses_total, P_l2_errors_total
//	P_bytes, P_max_bytes, P_entries                  gauges
func (c *Cache) Collector() prometheus.Collector { return c.metrics }

type collector struct {
	c        *Cache
	counters []counterDesc
	bytes    *prometheus.Desc
	maxBytes *prometheus.Desc
	entries  *prometheus.Desc
}

type counterDesc struct {
	desc  *prometheus.Desc
	value func(Stats) uint64
}

func newCollector(c *Cache, prefix string, labels prometheus.Labels) *collector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prefix+"_"+name, help, nil, labels)
	}
	counter := func(name, help string, value func(Stats) uint64) counterDesc {
		return counterDesc{desc(name+"_total", help), value}
	}
	return &collector{
		c: c,
		counters: []counterDesc{
			counter("hits", "Lookups served from memory.", func(s Stats) uint64 { return s.Hits }),
			counter("misses", "Lookups not served from memory.", func(s Stats) uint64 { return s.Misses }),
			counter("coalesced", "Misses that waited for another caller's lookup of the same key.", func(s Stats) uint64 { return s.Coalesced }),
			counter("fetches", "Fetches from the origin: misses neither coalesced nor found in the second level.", func(s Stats) uint64 { return s.Fetches }),
			counter("fetch_errors", "Fetches that failed.", func(s Stats) uint64 { return s.FetchErrors }),
			counter("evictions", "Entries dropped to make room.", func(s Stats) uint64 { return s.Evictions }),
			counter("too_large", "Values served but not stored for their size.", func(s Stats) uint64 { return s.TooLarge }),
			counter("l2_hits", "Second-level lookups that found a value.", func(s Stats) uint64 { return s.L2Hits }),
			counter("l2_misses", "Second-level lookups that found none.", func(s Stats) uint64 { return s.L2Misses }),
			counter("l2_errors", "Second-level calls that failed, or were skipped after a recent failure.", func(s Stats) uint64 { return s.L2Errors }),
		},
		bytes:    desc("bytes", "Bytes the stored entries cost: keys, values and per-entry overhead."),
		maxBytes: desc("max_bytes", "Bound of the bytes the stored entries cost."),
		entries:  desc("entries", "Entries stored."),
	}
}

// Describe implements prometheus.Collector.
func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, cd := range m.counters {
		ch <- cd.desc
	}
	ch <- m.bytes
	ch <- m.maxBytes
	ch <- m.entries
}

// Collect implements prometheus.Collector.
func (m *collector) Collect(ch chan<- prometheus.Metric) {
	s := m.c.Stats()
	for _, cd := range m.counters {
		ch <- prometheus.MustNewConstMetric(cd.desc, prometheus.CounterValue, float64(cd.value(s)))
	}
	ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(m.maxBytes, prometheus.GaugeValue, float64(s.MaxBytes))
	ch <- prometheus.MustNewConstMetric(m.entries, prometheus.GaugeValue, float64(s.Entries))
}
