//go:build unix

package cluster

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// A relay closes once its node has had no viewers of the stream for
// --relay-idle, and opens again for the next viewer. The two nodes run in
// this process and share one in-memory registry.
func TestRelayClosesWhenIdle(t *testing.T) {
	t.Parallel()
	nodes := e2eutil.StartClusterNodes(t, func(c *config.Config) { c.RelayIdle = time.Second }, "node-a", "node-b")
	a, b := nodes[0], nodes[1]
	e2eutil.PublishFFmpeg(t, a.RTMPURL("live/stream"))
	src := e2eutil.WaitLive(t, a, "live/stream")

	pulls := func() int { return src.Stats().ReaderCount["relay"] }
	for round := range 2 {
		v := e2eutil.PlayRTMP(t, b.RTMPAddr().String(), "live/stream")
		v.WaitFrames(t, 30, 15*time.Second)
		if pulls() != 1 {
			t.Fatalf("round %d: A serves %d pulls, want 1", round, pulls())
		}
		v.Close()
		testutil.WaitFor(t, 10*time.Second, "B's relay to close after a second without viewers", func() bool {
			return pulls() == 0 && b.Hub.Get(streamname.Name("live/stream")) == nil
		})
	}
	testutil.WaitFor(t, 5*time.Second, "B's relay record to go", func() bool {
		code, body := e2eutil.HTTPGet(t, a.HTTPURL+"/api/v1/streams/live/stream")
		return code == 200 && strings.Contains(string(body), `"relays": []`)
	})
}

// A relay link is written as each packet arrives, whatever the upstream's
// merge window: an edge in low-latency mode gets its frames spread as the
// publisher sends them (about 33 ms apart), while the origin's own viewers
// get theirs in bursts half a second apart. Two meshcast processes on a
// real Redis.
func TestRelayLinkIgnoresMergeWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	t.Parallel()
	testutil.Need(t, "ffmpeg")
	nodes := startRedisNodes(t, func(id string) []string {
		if id == "origin" {
			return []string{"--merge-window", "500ms"}
		}
		return []string{"--low-latency"}
	}, "origin", "edge")
	origin, edge := nodes[0], nodes[1]
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/stream", origin.RTMPPort))
	e2eutil.WaitLiveHTTP(t, origin.HTTPURL, "live/stream")
	atOrigin := e2eutil.PlayRTMP(t, origin.RTMPAddr, "live/stream")
	atEdge := e2eutil.PlayRTMP(t, edge.RTMPAddr, "live/stream")
	atOrigin.WaitFrames(t, 60, 20*time.Second)
	atEdge.WaitFrames(t, 60, 20*time.Second)
	atOrigin.Gaps.Reset()
	atEdge.Gaps.Reset()
	atEdge.WaitFrames(t, 150, 20*time.Second) // five seconds of video
	if g := atEdge.Gaps.Max(); g > 300*time.Millisecond {
		t.Errorf("longest gap between frames at the edge %v: the relay link waited for the origin's 500 ms window", g)
	}
	if g := atOrigin.Gaps.Max(); g < 350*time.Millisecond {
		t.Errorf("longest gap between frames at the origin %v: its viewers' 500 ms window is not in force", g)
	}
	t.Logf("longest gap between frames: edge %v, origin %v", atEdge.Gaps.Max().Round(time.Millisecond), atOrigin.Gaps.Max().Round(time.Millisecond))
}

// Nodes whose --parent settings form a circle never pull from each other
// in it: B and C each name the other as parent. With viewers on both, the
// one whose pull would close the circle is answered 508 Loop Detected, or
// never asks, and both pull from the owner, A. Three meshcast processes on
// a real Redis.
func TestParentCircle(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	t.Parallel()
	testutil.Need(t, "ffmpeg")
	nodes := startRedisNodes(t, func(id string) []string {
		switch id {
		case "node-b":
			return []string{"--parent", "node-c"}
		case "node-c":
			return []string{"--parent", "node-b"}
		}
		return nil
	}, "node-a", "node-b", "node-c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/stream", a.RTMPPort))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, "live/stream")
	// Viewers on B and C arrive together, so both relays start at once,
	// each choosing the other as its parent.
	var vb, vc *e2eutil.RTMPViewer
	done := make(chan struct{})
	go func() { defer close(done); vb = e2eutil.PlayRTMP(t, b.RTMPAddr, "live/stream") }()
	vc = e2eutil.PlayRTMP(t, c.RTMPAddr, "live/stream")
	<-done
	vb.WaitFrames(t, 60, 40*time.Second)
	vc.WaitFrames(t, 60, 40*time.Second)
	// Neither pulls from the other in a circle: one pulls from the owner,
	// the other from the owner or through it.
	testutil.WaitFor(t, 10*time.Second, "B and C to pull along a path that ends at A", func() bool {
		s, ok := e2eutil.GetStream(t, a.HTTPURL, "live/stream")
		if !ok {
			return false
		}
		ups := map[string]string{}
		for _, rel := range s.Relays {
			ups[rel.Node] = rel.Upstream
		}
		ub, uc := ups["node-b"], ups["node-c"]
		return ub != "" && uc != "" && !(ub == "node-c" && uc == "node-b") && (ub == "node-a" || uc == "node-a")
	})
	// A pull that already passed B is answered 508 by B, whatever B has.
	req, err := http.NewRequest(http.MethodGet, b.HTTPURL+cluster.PullPath+"live/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	cluster.SetVia(req, []cluster.NodeID{"node-b", "node-x"})
	cluster.SignPull(req, clusterSecret, "node-y", time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Errorf("a pull that passed B already: %s, want 508 Loop Detected", resp.Status)
	}
}
