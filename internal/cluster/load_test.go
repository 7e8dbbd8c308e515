package cluster

import (
	"testing"
	"time"
)

type fixedStreams struct{ streams, viewers int }

func (f fixedStreams) Load() (int, int) { return f.streams, f.viewers }

type fixedSent uint64

func (f fixedSent) BytesSent() uint64 { return uint64(f) }

func TestLoadMeterCPU(t *testing.T) {
	m := NewLoadMeter(fixedStreams{2, 7}, fixedSent(0))
	// A clock tick lands between the meter's start and the first
	// heartbeat, a moment later: no CPU figure comes of so short a span.
	m.lastCPU -= 10 * time.Millisecond
	if l := m.Load(); l.CPU != 0 || l.Streams != 2 || l.Viewers != 7 {
		t.Fatalf("load %+v from a span of %v, want no CPU figure, 2 streams and 7 viewers", l, time.Since(m.at))
	}
	// Over a full window of one busy goroutine, the figure is a share of
	// the node's cores.
	for end := time.Now().Add(loadWindow + 50*time.Millisecond); time.Now().Before(end); {
	}
	l := m.Load()
	if l.CPU <= 0 || l.CPU > 1 {
		t.Fatalf("CPU %.3f after a window of work, want (0, 1]", l.CPU)
	}
	t.Logf("CPU %.2f", l.CPU)
}
