package cluster

import (
	"runtime"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/procstat"
)

// loadWindow is the shortest span the load meter turns into rates. The
// kernel counts a process's CPU time in ticks of 10 ms, so a span of a few
// milliseconds can show one tick as many cores' worth: the first heartbeat
// comes right after the meter starts.
const loadWindow = 500 * time.Millisecond

// StreamCounter counts a node's streams and viewers (hub.Hub.Load).
type StreamCounter interface {
	Load() (streams, viewers int)
}

// ByteCounter counts the bytes a node has sent (stream.Sender.BytesSent).
type ByteCounter interface {
	BytesSent() uint64
}

// LoadMeter measures a node's load for its heartbeats (MemberConfig.Load):
// streams and viewers now, CPU and egress over the last window of at least
// loadWindow.
type LoadMeter struct {
	streams StreamCounter
	sent    ByteCounter

	mu       sync.Mutex
	at       time.Time     // the window's start
	lastSent uint64        // bytes sent at its start
	lastCPU  time.Duration // the process's CPU time at its start
	rates    Load          // CPU and EgressBPS over the last whole window
}

// NewLoadMeter returns a meter of streams and of the bytes sent, whose
// first window starts now.
func NewLoadMeter(streams StreamCounter, sent ByteCounter) *LoadMeter {
	m := &LoadMeter{streams: streams, sent: sent, at: time.Now(), lastSent: sent.BytesSent()}
	if st, err := procstat.Read(0); err == nil {
		m.lastCPU = st.CPU
	}
	return m
}

// Load returns the node's load now.
func (m *LoadMeter) Load() Load {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if span := now.Sub(m.at); span >= loadWindow {
		sent := m.sent.BytesSent()
		m.rates.EgressBPS = int64(float64(sent-m.lastSent) * 8 / span.Seconds())
		if st, err := procstat.Read(0); err == nil {
			m.rates.CPU = min(max((st.CPU-m.lastCPU).Seconds()/span.Seconds()/float64(runtime.NumCPU()), 0), 1)
			m.lastCPU = st.CPU
		}
		m.at, m.lastSent = now, sent
	}
	l := m.rates
	l.Streams, l.Viewers = m.streams.Load()
	return l
}
