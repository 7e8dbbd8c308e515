//go:build unix

package security

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestHostileMedia publishes legal but unusual streams with a Go publisher
// (chunk size 1, timestamps at the extended-timestamp threshold and across
// the 32-bit wrap) while a healthy stream plays alongside.
func TestHostileMedia(t *testing.T) {
	e := startHostile(t)
	pid := e.p.Cmd.Process.Pid

	// publish sends a decoder configuration and frames at 30 fps from ts0
	// for dur, every tenth a keyframe, with an AAC frame 5 ms behind each
	// video frame (interleaved backwards across a wrap); a viewer that joins after the first keyframe must get
	// every video frame with the timestamps sent. It returns the sent
	// video timestamps and the viewer.
	publish := func(t *testing.T, key string, chunkSize, frameSize int, ts0 uint32, dur time.Duration) ([]uint32, *tsViewer) {
		t.Helper()
		pub, err := publishGo(t, nil, e.p.RTMPAddr, "live", key, chunkSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.write(rtmp.TypeVideo, ts0, avcSeqHeader); err != nil {
			t.Fatal(err)
		}
		if err := pub.write(rtmp.TypeAudio, ts0, []byte{0xaf, 0, 0x12, 0x10}); err != nil {
			t.Fatal(err)
		}
		var sent []uint32
		var v *tsViewer
		start := time.Now()
		for i := 0; time.Since(start) < dur; i++ {
			ts := ts0 + uint32(i*33)
			if err := pub.write(rtmp.TypeVideo, ts, avcFrame(i%10 == 0, frameSize)); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if err := pub.write(rtmp.TypeAudio, max(ts, 5)-5, []byte{0xaf, 1, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c}); err != nil {
				t.Fatalf("audio %d: %v", i, err)
			}
			sent = append(sent, ts)
			if i == 0 {
				// Joins at the first keyframe, which it gets from the cache.
				waitLiveVideo(t, e.p.HTTPURL, "live/"+key)
				v = watch(t, e.p.RTMPAddr, "live/"+key, false)
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * 33 * time.Millisecond)))
		}
		v.waitFrames(t, int64(len(sent)), 20*time.Second)
		if err := pub.readErr.Load(); err != nil {
			t.Fatalf("server closed the publisher: %v", err)
		}
		return sent, v
	}

	t.Run("chunk size 1", func(t *testing.T) {
		cpu0, wall0 := cpuTime(t, pid), time.Now()
		sent, v := publish(t, "chunk1", 1, 4096, 0, 5*time.Second)
		cpu, wall := cpuTime(t, pid)-cpu0, time.Since(wall0)
		share := cpu.Seconds() / wall.Seconds()
		t.Logf("%d frames of 4 KiB in 1-byte chunks (%.0f KiB/s): server used %v of CPU in %v (%.0f%% of a core)",
			len(sent), float64(len(sent)*4096)/1024/wall.Seconds(), cpu, wall.Round(time.Millisecond), share*100)
		if share > 0.8 {
			t.Errorf("server used %.0f%% of a core for a 1-byte-chunk publisher", share*100)
		}
		checkTimestamps(t, sent, v.timestamps())
		e.healthy(t)
	})
	t.Run("extended timestamps near 0xFFFFFF", func(t *testing.T) {
		sent, v := publish(t, "ext24", rtmp.DefaultChunkSize, 1000, 0xffffff-1000, 2*time.Second)
		if sent[len(sent)-1] <= 0xffffff {
			t.Fatalf("the timestamps did not pass 0xFFFFFF: last %#x", sent[len(sent)-1])
		}
		checkTimestamps(t, sent, v.timestamps())
		e.healthy(t)
	})
	t.Run("timestamps across the 32-bit wrap", func(t *testing.T) {
		sent, v := publish(t, "wrap32", rtmp.DefaultChunkSize, 1000, 1<<32-1000, 2*time.Second)
		if sent[len(sent)-1] > 1<<31 {
			t.Fatalf("the timestamps did not wrap: last %#x", sent[len(sent)-1])
		}
		checkTimestamps(t, sent, v.timestamps())
		e.healthy(t)
	})
	e.backToBaseline(t)
}

// checkTimestamps checks a viewer got every video frame sent, with its
// timestamp: continuing, modulo 2^32, as they were sent.
func checkTimestamps(t *testing.T, sent, got []uint32) {
	t.Helper()
	if len(got) < len(sent) {
		t.Fatalf("viewer got %d of %d frames", len(got), len(sent))
	}
	for i := range sent {
		if got[i] != sent[i] {
			t.Fatalf("frame %d: timestamp %d (%#x), sent %d (%#x); around it the viewer got %v", i, got[i], got[i], sent[i], sent[i], got[max(0, i-2):min(len(got), i+3)])
		}
		if i > 0 {
			if d := int32(got[i] - got[i-1]); d <= 0 || d > 1000 {
				t.Fatalf("frame %d: timestamp %d after %d", i, got[i], got[i-1])
			}
		}
	}
}

// waitLiveVideo waits for the API to report name live with video.
func waitLiveVideo(t *testing.T, httpURL, name string) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, name+" to go live", func() bool {
		code, err := e2eutil.HTTPGetQuiet(fmt.Sprintf("%s/api/v1/streams/%s", httpURL, name))
		return err == nil && code == 200
	})
}
