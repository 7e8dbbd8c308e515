//go:build unix

package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestNewOwnerContinuesTimeline: the publisher's node is killed and the
// publisher (a new ffmpeg, timestamps from 0) comes back to a node that
// never had the stream. That node continues the stream's timeline from
// the registry, so a viewer moved there from a relaying node goes on: its
// HLS playlist numbers on from the relay's, and its FLV timestamps follow
// the relay's instead of starting again from 0.
func TestNewOwnerContinuesTimeline(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg")
	red := testutil.StartRedis(t, 0)
	const secret = "cluster-secret-of-the-timeline-test"
	const key = "publish-key-of-the-timeline-test"
	flags := func(id string) []string {
		return []string{"--redis", red.URL(), "--cluster-secret", secret, "--node-id", id,
			"--advertise-host", "127.0.0.1", "--publisher-grace", "2s", "--publish-keys", "live=" + key}
	}
	a := e2eutil.StartProcess(t, flags("node-a")...)
	b := e2eutil.StartProcess(t, flags("node-b")...)
	c := e2eutil.StartProcess(t, flags("node-c")...)
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(b.HTTPURL)) == 3 })

	const name = "live/timeline"
	publish := func(p *e2eutil.Proc) (stop func()) {
		// -c copy of the shared clip: every new ffmpeg starts from 0.
		return e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://%s/%s?key=%s", p.RTMPAddr, name, key))
	}
	stopFirst := publish(a)
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)

	// Viewers on node-b, which relays the stream from node-a.
	onB := e2eutil.WatchHLS(b.HTTPURL + "/" + name + "/index.m3u8")
	defer onB.Close()
	flvB := e2eutil.PlayFLV(t, b.HTTPURL+"/"+name+".flv")
	defer flvB.Close()
	testutil.WaitFor(t, 30*time.Second, "node-b's playlist to reach 6 s of media", func() bool { return onB.Sequence() >= 6 })
	time.Sleep(4 * time.Second)
	seqBefore, tsBefore := onB.Sequence(), flvB.LastTS.Load()
	t.Logf("before the kill: node-b's playlist at segment %d, its FLV at %d ms", seqBefore, tsBefore)

	a.Kill(t)
	stopFirst()
	// The same publisher (its key: the claim is taken over at once) on a
	// node that never had the stream.
	publish(c)
	e2eutil.WaitLiveHTTP(t, c.HTTPURL, name)

	onC := e2eutil.WatchHLS(c.HTTPURL + "/" + name + "/index.m3u8")
	defer onC.Close()
	testutil.WaitFor(t, 30*time.Second, "node-c's playlist", func() bool { return onC.Sequence() >= 0 })
	flvC := e2eutil.PlayFLV(t, c.HTTPURL+"/"+name+".flv")
	defer flvC.Close()
	testutil.WaitFor(t, 10*time.Second, "node-c's FLV video", func() bool { return flvC.LastTS.Load() >= 0 })
	// node-b's relay resumes from node-c; give both a few segments.
	testutil.WaitFor(t, 30*time.Second, "node-b's playlist to go on past the kill", func() bool { return onB.Sequence() > seqBefore+2 })
	time.Sleep(4 * time.Second)

	seqB, seqC := onB.Sequence(), onC.Sequence()
	tsB, tsC := flvB.LastTS.Load(), flvC.LastTS.Load()
	t.Logf("after the move: node-b's playlist at segment %d, node-c's at %d; FLV at %d ms on node-b, %d ms on node-c", seqB, seqC, tsB, tsC)
	if seqC <= seqBefore {
		t.Errorf("node-c's playlist at segment %d, not after node-b's %d before the kill: its numbering started again", seqC, seqBefore)
	}
	// Segments are numbered by their start over the 1 s target, and start
	// at keyframes 2 s apart: the same media has the same number, give or
	// take a segment polled half a second apart.
	if d := seqC - seqB; d < -4 || d > 4 {
		t.Errorf("node-c's playlist at segment %d, node-b's at %d: not the same numbering", seqC, seqB)
	}
	if tsC <= tsBefore {
		t.Errorf("node-c's FLV at %d ms, not after node-b's %d ms before the kill", tsC, tsBefore)
	}
	if d := tsC - tsB; d < -2000 || d > 2000 {
		t.Errorf("node-c's FLV at %d ms, node-b's at %d ms: not the same timeline", tsC, tsB)
	}
	if n := flvB.BackTS.Load(); n != 0 {
		t.Errorf("node-b's FLV timestamps went back %d times", n)
	}
}
