package bench

import (
	"sync/atomic"
	"time"
)

// histogram counts durations in 1 ms buckets up to 10 s; it is safe for
// concurrent use and allocates nothing per sample.
type histogram struct {
	buckets [10001]atomic.Uint32
	n       atomic.Int64
}

func (h *histogram) add(d time.Duration) {
	ms := d.Milliseconds()
	if ms < 0 {
		ms = 0
	}
	if ms > 10000 {
		ms = 10000
	}
	h.buckets[ms].Add(1)
	h.n.Add(1)
}

// quantile returns the q-quantile in milliseconds, or -1 with no samples.
func (h *histogram) quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return -1
	}
	rank := int64(q*float64(n-1)) + 1
	var seen int64
	for i := range h.buckets {
		seen += int64(h.buckets[i].Load())
		if seen >= rank {
			return float64(i)
		}
	}
	return 10000
}
