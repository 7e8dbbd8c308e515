//go:build unix

package security

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// longTests is the environment variable that turns on the long tests.
const longTests = "MESHCAST_LONG_TESTS"

// TestHostileHugePublish publishes more than 5 GiB as fast as loopback
// takes it, past the 4 GiB mark where RTMP's 32-bit byte counts wrap (a
// stall in servers that compare them naively), while a viewer watches.
// The publisher must never stall, the server's acknowledgements must keep
// coming after the mark, and the viewer must keep getting frames. (No
// viewer keeps up with a publisher on loopback while the server copies for
// both: the server drops it as too slow, and it joins again, as players
// do.)
func TestHostileHugePublish(t *testing.T) {
	if os.Getenv(longTests) != "1" {
		t.Skipf("publishes 5 GiB over loopback; run it with %s=1 go test -run TestHostileHugePublish ./test/e2e/", longTests)
	}
	const (
		total     = 5<<30 + 256<<20 // payload bytes to send: past 5 GiB of wire bytes
		mark      = 4 << 30         // where the 32-bit byte count wraps
		msgSize   = 2 << 20
		chunkSize = 1 << 20
		maxGap    = 2 * time.Second
		ackWindow = 2500000 // what meshcast announces
	)
	e := startHostile(t)
	pub, err := publishGo(t, nil, e.p.RTMPAddr, "live", "huge", chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.write(rtmp.TypeVideo, 0, avcSeqHeader); err != nil {
		t.Fatal(err)
	}
	frame := avcFrame(true, msgSize)
	if err := pub.write(rtmp.TypeVideo, 0, frame); err != nil {
		t.Fatal(err)
	}
	waitLiveVideo(t, e.p.HTTPURL, "live/huge")
	v := watchRejoining(t, e.p.RTMPAddr, "live/huge")
	v.waitFrames(t, 1, 15*time.Second)

	// Wire bytes of one message: a type 0 header, then a type 3 header
	// per further chunk.
	wire := int64(rtmp.MessageSize(rtmp.CSIDVideo, 0, msgSize, chunkSize))
	var (
		sent, sentWire           = int64(msgSize), int64(len(avcSeqHeader)) + wire
		longestGap               time.Duration
		acksAtMark, framesAtMark int64 = -1, -1
		start                          = time.Now()
		last                           = start
	)
	for ts := uint32(33); sent < total; ts += 33 {
		if time.Since(start) > 30*time.Minute {
			t.Fatalf("sent only %d MiB in 30 minutes", sent>>20)
		}
		if err := pub.write(rtmp.TypeVideo, ts, frame); err != nil {
			t.Fatalf("write after %d MiB: %v", sent>>20, err)
		}
		now := time.Now()
		longestGap = max(longestGap, now.Sub(last))
		last = now
		sent += msgSize
		sentWire += wire
		if acksAtMark < 0 && sentWire >= mark {
			acksAtMark, framesAtMark = pub.acks.Load(), v.frames.Load()
			t.Logf("4 GiB mark after %v: %d acknowledgements, the viewer has %d frames", time.Since(start).Round(time.Millisecond), acksAtMark, framesAtMark)
		}
	}
	elapsed := time.Since(start)
	framesAtEnd := v.frames.Load()
	t.Logf("published %d MiB (%d MiB on the wire) in %v: %.0f MiB/s; longest gap between writes %v",
		sent>>20, sentWire>>20, elapsed.Round(time.Millisecond), float64(sent)/(1<<20)/elapsed.Seconds(), longestGap.Round(time.Millisecond))
	if longestGap > maxGap {
		t.Errorf("the publisher stalled for %v", longestGap)
	}
	// Acknowledgements catch up with what was sent, modulo 2^32 (give or
	// take the commands before publishing, not counted in sentWire).
	testutil.WaitFor(t, 15*time.Second, "acknowledgements to reach the last bytes sent", func() bool {
		d := int32(uint32(sentWire) - pub.lastAck.Load())
		return d > -64<<10 && d < 2*ackWindow
	})
	afterMark := pub.acks.Load() - acksAtMark
	if want := (sentWire - mark) / ackWindow / 2; afterMark < want {
		t.Errorf("%d acknowledgements after the 4 GiB mark, want about %d", afterMark, 2*want)
	}
	t.Logf("%d acknowledgements in all, %d after the mark; the last at %d (bytes sent mod 2^32: %d)",
		pub.acks.Load(), afterMark, pub.lastAck.Load(), uint32(sentWire))
	// The viewer got frames between the mark and the end.
	t.Logf("the viewer joined %d times and got %d frames (%d MiB), %d of them after the mark",
		v.joins.Load(), framesAtEnd, v.bytes.Load()>>20, framesAtEnd-framesAtMark)
	if framesAtEnd <= framesAtMark {
		t.Errorf("the viewer got no frame after the 4 GiB mark")
	}
	// And past the mark the stream plays on at a viewer's pace: two
	// seconds of 64 KiB frames at 30 fps all reach it.
	ts := uint32(sent/msgSize) * 33
	small := avcFrame(true, 64<<10)
	small0 := v.small.Load()
	for i := 0; i < 60; i++ {
		ts += 33
		if err := pub.write(rtmp.TypeVideo, ts, small); err != nil {
			t.Fatalf("write after the burst: %v", err)
		}
		time.Sleep(33 * time.Millisecond)
	}
	testutil.WaitFor(t, 15*time.Second, "the viewer to get the frames sent after the burst", func() bool {
		return v.small.Load()-small0 >= 50
	})
	if err := pub.readErr.Load(); err != nil {
		t.Errorf("publisher: %v", err)
	}
	e.healthy(t)
	v.close()
	pub.close()
	e.backToBaseline(t)
}

// rejoiningViewer plays a stream, counting its video frames and bytes
// without keeping them, and plays it again whenever the server drops it.
type rejoiningViewer struct {
	frames atomic.Int64
	small  atomic.Int64 // frames under 1 MiB
	bytes  atomic.Int64
	joins  atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	conn   net.Conn
}

func watchRejoining(t *testing.T, addr, name string) *rejoiningViewer {
	t.Helper()
	v := &rejoiningViewer{stop: make(chan struct{}), done: make(chan struct{})}
	go v.run(addr, name)
	t.Cleanup(v.close)
	return v
}

// close stops the viewer and waits for it.
func (v *rejoiningViewer) close() {
	v.once.Do(func() {
		close(v.stop)
		v.mu.Lock()
		if v.conn != nil {
			v.conn.Close()
		}
		v.mu.Unlock()
		<-v.done
	})
}

func (v *rejoiningViewer) run(addr, name string) {
	defer close(v.done)
	for i := 0; i < 1000; i++ {
		select {
		case <-v.stop:
			return
		default:
		}
		if err := v.play(addr, name); err != nil {
			select {
			case <-v.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// play plays name once, until the server or the test ends it.
func (v *rejoiningViewer) play(addr, name string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	v.mu.Lock()
	select {
	case <-v.stop:
		v.mu.Unlock()
		conn.Close()
		return nil
	default:
	}
	v.conn = conn
	v.mu.Unlock()
	defer conn.Close()
	c, err := e2eutil.StartPlaying(conn, addr, name)
	if err != nil {
		return err
	}
	v.joins.Add(1)
	c.Skim()
	for {
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		m, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if m.Type == rtmp.TypeVideo && len(m.Payload) >= 2 && m.Payload[1] == 1 {
			v.frames.Add(1)
			v.bytes.Add(int64(m.Length))
			if m.Length < 1<<20 {
				v.small.Add(1)
			}
		}
	}
}

// waitFrames waits for the viewer to have received n video frames in all.
func (v *rejoiningViewer) waitFrames(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%d video frames (have %d)", n, v.frames.Load()), func() bool {
		return v.frames.Load() >= n
	})
}
