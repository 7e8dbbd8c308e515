//go:build unix

package security

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
)

// TestHostileSlowViewer plays the stream at a tenth of its bitrate: the
// server skips that viewer ahead to live or drops it, and the healthy
// viewer alongside never stalls.
func TestHostileSlowViewer(t *testing.T) {
	e := startHostile(t)
	bitrate := streamBitrate(t, e.p.HTTPURL, "live/stream")
	rate := float64(bitrate) / 8 / 10
	t.Logf("stream at %d kbit/s; the slow viewer reads %.0f KiB/s", bitrate/1000, rate/1024)

	skips0 := e.metric(t, "meshcast_reader_skips_total")
	dropped0 := e.metric(t, "meshcast_slow_readers_closed_total")
	slow := playThrottled(t, e.p.RTMPAddr, "live/stream", rate)
	start := time.Now()
	if n := e.metric(t, `meshcast_viewers{protocol="rtmp"}`); n != 2 {
		t.Fatalf("%v RTMP viewers, want the healthy and the slow one", n)
	}

	// Until the server deals with the slow viewer, the healthy one gets at
	// least 1 s of video in every 5 s.
	deadline := time.Now().Add(150 * time.Second)
	handled := ""
	for handled == "" {
		if time.Now().After(deadline) {
			t.Fatalf("the slow viewer is neither skipped nor dropped after 150 s (it got %d frames)", slow.frames.Load())
		}
		before := e.v.Video.Load()
		window := time.Now().Add(5 * time.Second)
		for handled == "" && time.Now().Before(window) {
			time.Sleep(500 * time.Millisecond)
			switch {
			case e.metric(t, "meshcast_slow_readers_closed_total") > dropped0:
				handled = "dropped as too slow"
			case e.metric(t, "meshcast_reader_skips_total") > skips0:
				handled = "skipped ahead to live"
			case e.metric(t, `meshcast_viewers{protocol="rtmp"}`) < 2:
				// Dropped by the write timeout: its socket took too little
				// for too long. (It may yet read for a while what the
				// kernel holds for it.)
				handled = "dropped"
			case slow.err.Load() != nil:
				handled = fmt.Sprintf("closed (%v)", slow.err.Load())
			}
		}
		if got := e.v.Video.Load() - before; handled == "" && got < 30 {
			t.Fatalf("the healthy viewer got %d frames in 5 s next to the slow one", got)
		}
	}
	t.Logf("the slow viewer was %s after %v, having received %d video frames", handled, time.Since(start).Round(time.Second), slow.frames.Load())
	e.healthy(t)
	slow.close()
	e.backToBaseline(t)
}

// streamBitrate returns a stream's input bitrate from the API, once known.
func streamBitrate(t *testing.T, httpURL, name string) int64 {
	t.Helper()
	var bps int64
	testutil.WaitFor(t, 20*time.Second, name+"'s bitrate", func() bool {
		resp, err := http.Get(httpURL + "/api/v1/streams/" + name)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var s struct {
			BitrateBPS int64 `json:"bitrate_bps"`
		}
		if json.NewDecoder(resp.Body).Decode(&s) != nil {
			return false
		}
		bps = s.BitrateBPS
		return bps > 0
	})
	return bps
}

// throttledViewer is an RTMP player whose connection reads at a fixed rate
// through a small receive buffer.
type throttledViewer struct {
	conn   net.Conn
	frames atomic.Int64
	err    atomic.Value
	done   chan struct{}
}

// throttledConn reads at most rate bytes a second on average.
type throttledConn struct {
	net.Conn
	rate  float64
	start time.Time
	n     int64
}

func (c *throttledConn) Read(p []byte) (int, error) {
	if len(p) > 1024 {
		p = p[:1024]
	}
	due := c.start.Add(time.Duration(float64(c.n) / c.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	return n, err
}

func playThrottled(t *testing.T, addr, name string, rate float64) *throttledViewer {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		})
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	tc := &throttledConn{Conn: conn, rate: rate, start: time.Now()}
	c, err := rtmp.NewClient(tc)
	if err == nil {
		err = c.Connect("live", "rtmp://"+addr+"/live")
	}
	if err == nil {
		err = c.Play(name[len("live/"):])
	}
	if err != nil {
		conn.Close()
		t.Fatalf("slow viewer: %v", err)
	}
	conn.SetDeadline(time.Time{})
	v := &throttledViewer{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		for {
			conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			m, err := c.ReadMessage()
			if err != nil {
				v.err.Store(err)
				return
			}
			if m.Type == rtmp.TypeVideo {
				v.frames.Add(1)
			}
		}
	}()
	t.Cleanup(v.close)
	return v
}

func (v *throttledViewer) close() { v.conn.Close(); <-v.done }
