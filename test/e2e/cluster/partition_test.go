//go:build unix

package cluster

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// behindProxy starts a node whose advertised addresses (what its peers
// dial) are a faultProxy's on loopback address host, in front of its real
// HTTP port; the node's own ports stay on 127.0.0.1 for the test's
// players and publishers. more are added to its flags.
func behindProxy(t *testing.T, host string, flags func(advertise string) []string) (*e2eutil.Proc, *faultProxy) {
	t.Helper()
	rtmpPort, httpPort := testutil.FreePort(t), testutil.FreePort(t)
	proxy := startProxy(t, net.JoinHostPort(host, strconv.Itoa(httpPort)), fmt.Sprintf("127.0.0.1:%d", httpPort), 0)
	return e2eutil.StartProcessAt(t, rtmpPort, httpPort, flags(host)...), proxy
}

// TestPartitionRelayRepath: an edge relays a stream through its parent,
// which relays it from the owner; the link to the parent is cut (a
// blackhole: open, silent). The edge finds another path, the owner
// itself, and its viewer's video resumes within 3 s.
func TestPartitionRelayRepath(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	red := testutil.StartRedis(t, 0)
	owner := e2eutil.StartProcess(t, clusterFlags(red.URL(), "node-o")...)
	_, link := behindProxy(t, "127.0.0.2", func(host string) []string {
		return []string{"--redis", red.URL(), "--cluster-secret", "cluster-secret-of-the-tests", "--node-id", "node-m", "--advertise-host", host}
	})
	edge := e2eutil.StartProcess(t, clusterFlags(red.URL(), "node-e", "--parent", "node-m")...)
	ids := []string{"node-o", "node-m", "node-e"}
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool {
		m, _ := missingNodes(edge.HTTPURL, ids)
		return len(m) == 0
	})

	const name = "live/repath"
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s", owner.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, owner.HTTPURL, name)
	viewer := e2eutil.PlayFLV(t, edge.HTTPURL+"/"+name+".flv")
	defer viewer.Close()
	testutil.WaitFor(t, 20*time.Second, "the edge's viewer to play", func() bool { return viewer.Video.Load() >= 60 })
	testutil.WaitFor(t, 10*time.Second, "the edge to relay through its parent", func() bool {
		s, ok := e2eutil.GetStream(t, edge.HTTPURL, name)
		if !ok {
			return false
		}
		for _, r := range s.Relays {
			if r.Node == "node-e" && r.Upstream == "node-m" {
				return true
			}
		}
		return false
	})
	viewer.Gaps.Reset()

	link.Cut()
	cutAt := time.Now()
	frames := viewer.Video.Load()
	testutil.WaitFor(t, 15*time.Second, "the edge's viewer to play again", func() bool {
		return viewer.Video.Load() > frames+1
	})
	resumed := time.Since(cutAt)
	testutil.WaitFor(t, 10*time.Second, "the edge to relay from the owner", func() bool {
		s, ok := e2eutil.GetStream(t, edge.HTTPURL, name)
		if !ok {
			return false
		}
		for _, r := range s.Relays {
			if r.Node == "node-e" && r.Upstream == "node-o" {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second)
	gap := viewer.Gaps.Max()
	t.Logf("link to the parent cut; the edge's viewer played again %v after the cut, longest video gap %v (30 fps); %d timestamps back",
		resumed.Round(10*time.Millisecond), gap.Round(10*time.Millisecond), viewer.BackTS.Load())
	if gap > 3*time.Second+100*time.Millisecond {
		t.Errorf("longest video gap on the edge %v, want under 3 s (and three frames)", gap)
	}
	if n := viewer.BackTS.Load(); n != 0 {
		t.Errorf("%d video timestamps went back on the edge", n)
	}
	if err, _ := viewer.Err.Load().(error); err != nil {
		t.Errorf("the edge's viewer lost its connection: %v", err)
	}
}

// TestPartitionSplitBrain: the owner is cut off from Redis and from the
// other nodes (every link between them blackholed), while its publisher
// and a viewer still reach it. The publisher comes back with its key on
// node-b, which takes the stream over; the cut-off owner stops serving its
// viewer within one lease, and node-b's viewer follows node-b only, its
// timestamps never going back.
func TestPartitionSplitBrain(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	const lease = 5 * time.Second // --node-timeout's default
	const key = "publish-key-of-the-partition-test"
	red := testutil.StartRedis(t, 0)
	toRedis := startProxy(t, "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", red.Port), 0)
	flags := func(redisURL, id string) func(string) []string {
		return func(host string) []string {
			return []string{"--redis", redisURL, "--cluster-secret", "cluster-secret-of-the-tests", "--node-id", id,
				"--advertise-host", host, "--publish-keys", "live=" + key}
		}
	}
	o, toO := behindProxy(t, "127.0.0.2", flags("redis://"+toRedis.Addr()+"/0", "node-o"))
	b, toB := behindProxy(t, "127.0.0.3", flags(red.URL(), "node-b"))
	_, toC := behindProxy(t, "127.0.0.4", flags(red.URL(), "node-c"))
	ids := []string{"node-o", "node-b", "node-c"}
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool {
		m, _ := missingNodes(o.HTTPURL, ids)
		return len(m) == 0
	})

	const name = "live/split"
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s?key=%s", o.RTMPPort, name, key))
	e2eutil.WaitLiveHTTP(t, o.HTTPURL, name)
	onO := e2eutil.PlayFLV(t, o.HTTPURL+"/"+name+".flv")
	defer onO.Close()
	onB := e2eutil.PlayFLV(t, b.HTTPURL+"/"+name+".flv")
	defer onB.Close()
	testutil.WaitFor(t, 20*time.Second, "both viewers to play", func() bool {
		return onO.Video.Load() >= 60 && onB.Video.Load() >= 60
	})
	// node-o's last listing of the nodes (its peers) is taken by now:
	// once a node timeout after its first beat at the latest.
	time.Sleep(lease)

	for _, p := range []*faultProxy{toRedis, toO, toB, toC} {
		p.Cut()
	}
	cutAt := time.Now()
	// The publisher comes back with its key on node-b: a takeover, at once.
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s?key=%s", b.RTMPPort, name, key))
	testutil.WaitFor(t, 10*time.Second, "node-b to own the stream", func() bool {
		s, ok := e2eutil.GetStream(t, b.HTTPURL, name)
		return ok && s.Owner != nil && s.Owner.Node == "node-b"
	})
	tookOver := time.Since(cutAt)

	// node-o stops serving its viewer: the viewer's connection ends.
	var stopped time.Duration
	lastO := onO.Video.Load()
	lastOAt := time.Now()
	testutil.WaitFor(t, 3*lease, "node-o to stop serving its viewer", func() bool {
		if n := onO.Video.Load(); n != lastO {
			lastO, lastOAt = n, time.Now()
		}
		if onO.Err.Load() != nil {
			stopped = time.Since(cutAt)
			return true
		}
		return false
	})
	lastFrame := lastOAt.Sub(cutAt)
	framesB := onB.Video.Load()
	testutil.WaitFor(t, 15*time.Second, "node-b's viewer to play node-b's stream", func() bool { return onB.Video.Load() > framesB+60 })
	gapB := onB.Gaps.Max()
	t.Logf("cut off at 0; node-b took over at %v; node-o's viewer got its last frame at %v and was ended at %v (lease %v); node-b's viewer: longest gap %v, %d timestamps back, node-o's viewer: %d frames after it ended",
		tookOver.Round(10*time.Millisecond), lastFrame.Round(10*time.Millisecond), stopped.Round(10*time.Millisecond), lease,
		gapB.Round(10*time.Millisecond), onB.BackTS.Load(), onO.Video.Load()-lastO)
	if stopped > lease+time.Second {
		t.Errorf("node-o served its viewer %v after it was cut off, want within a lease (%v)", stopped, lease)
	}
	if n := onB.BackTS.Load(); n != 0 {
		t.Errorf("node-b's viewer: %d video timestamps went back (frames of two owners)", n)
	}
	if n := onO.Video.Load() - lastO; n != 0 {
		t.Errorf("node-o's viewer got %d frames after its connection ended", n)
	}
	if onO.BackTS.Load() != 0 {
		t.Errorf("node-o's viewer: %d video timestamps went back", onO.BackTS.Load())
	}
	if !strings.Contains(o.Stderr.String(), "cut off:") {
		t.Errorf("node-o did not log that it was cut off")
	}
}
