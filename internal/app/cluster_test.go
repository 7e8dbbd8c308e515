package app

import (
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/hub"
)

func TestLoadMeterCPU(t *testing.T) {
	m := newLoadMeter(hub.New(hub.Config{}), egress.NewSender(1))
	// A clock tick lands between the meter's start and the first
	// heartbeat, a moment later: no CPU figure comes of so short a span.
	m.lastCPU -= 10 * time.Millisecond
	if l := m.load(); l.CPU != 0 {
		t.Fatalf("CPU %.2f from a span of %v", l.CPU, time.Since(m.at))
	}
	// Over a full window of one busy goroutine, the figure is a share of
	// the node's cores.
	for end := time.Now().Add(loadWindow + 50*time.Millisecond); time.Now().Before(end); {
	}
	l := m.load()
	if l.CPU <= 0 || l.CPU > 1 {
		t.Fatalf("CPU %.3f after a window of work, want (0, 1]", l.CPU)
	}
	t.Logf("CPU %.2f", l.CPU)
}
