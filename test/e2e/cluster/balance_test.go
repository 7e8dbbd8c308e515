//go:build unix

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// route asks a node's route API where to play name over proto.
func route(t *testing.T, httpURL, name, proto string) (node, url string) {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, httpURL+"/api/v1/route?stream="+name+"&proto="+proto)
	var r struct {
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
		URL string `json:"url"`
	}
	if code != 200 || json.Unmarshal(body, &r) != nil {
		t.Fatalf("route %s: %d %s", name, code, body)
	}
	return r.Node.ID, r.URL
}

// nodeViewers reads every node's reported viewers from a node's API.
func nodeViewers(t *testing.T, httpURL string) map[string]int {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, httpURL+"/api/v1/nodes")
	var out struct {
		Nodes []struct {
			ID   string `json:"id"`
			Load struct {
				Viewers int `json:"viewers"`
			} `json:"load"`
		} `json:"nodes"`
	}
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("nodes: %d %s", code, body)
	}
	m := map[string]int{}
	for _, n := range out.Nodes {
		m[n.ID] = n.Load.Viewers
	}
	return m
}

// TestBalanceAndDrain places 300 HTTP-FLV viewers of 30 streams of uneven
// popularity through the route API of three nodes, then drains one node.
func TestBalanceAndDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	red := testutil.StartRedis(t, 0)
	flags := func(id string) []string {
		return []string{"--redis", red.URL(), "--cluster-secret", "cluster-secret-of-the-tests", "--node-id", id,
			"--advertise-host", "127.0.0.1", "--balance", "least-loaded", "--drain-grace", "8s"}
	}
	nodes := []*e2eutil.Proc{e2eutil.StartProcess(t, flags("node-1")...), e2eutil.StartProcess(t, flags("node-2")...), e2eutil.StartProcess(t, flags("node-3")...)}
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(nodes[0].HTTPURL)) == 3 })

	// 30 streams, each published to one of the nodes.
	src := e2eutil.SmallFLV(t)
	for i := range 30 {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
			"-i", src, "-c", "copy", "-f", "flv", fmt.Sprintf("rtmp://127.0.0.1:%d/live/s%d", nodes[i%3].RTMPPort, i))
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); cmd.Wait() })
	}
	for i := range 30 {
		e2eutil.WaitLiveHTTP(t, nodes[i%3].HTTPURL, fmt.Sprintf("live/s%d", i))
	}

	// Uneven popularity: stream i gets a share of 1/(i+1), 300 in all.
	var weights []float64
	var sum float64
	for i := range 30 {
		weights = append(weights, 1/float64(i+1))
		sum += weights[i]
	}
	var plan []string
	for i, w := range weights {
		for range int(w/sum*300 + 0.5) {
			plan = append(plan, fmt.Sprintf("live/s%d", i))
		}
	}
	for len(plan) < 300 {
		plan = append(plan, "live/s0")
	}
	plan = plan[:300]

	var mu sync.Mutex
	var viewers []*e2eutil.FLVViewer
	placed := map[string][]*e2eutil.FLVViewer{}
	t.Cleanup(func() {
		for _, v := range viewers {
			v.Close()
		}
	})
	// Viewers arrive over about ten seconds, asking the three nodes' route
	// APIs in turn, as a player behind DNS round robin would.
	for i, name := range plan {
		id, url := route(t, nodes[i%3].HTTPURL, name, "flv")
		v := e2eutil.PlayFLV(t, url)
		mu.Lock()
		viewers = append(viewers, v)
		placed[id] = append(placed[id], v)
		mu.Unlock()
		time.Sleep(30 * time.Millisecond)
	}
	var counts map[string]int
	testutil.WaitFor(t, 10*time.Second, "the nodes to report 300 viewers", func() bool {
		counts = nodeViewers(t, nodes[0].HTTPURL)
		total := 0
		for _, n := range counts {
			total += n
		}
		return total == 300
	})
	lo, hi := 300, 0
	for _, n := range counts {
		lo, hi = min(lo, n), max(hi, n)
	}
	t.Logf("viewers per node: %v (routed %d/%d/%d)", counts, len(placed["node-1"]), len(placed["node-2"]), len(placed["node-3"]))
	if len(counts) != 3 || lo == 0 || float64(hi)/float64(lo) > 1.5 {
		t.Errorf("viewers per node %v: max/min %d/%d, want at most 1.5", counts, hi, lo)
	}
	for i, v := range viewers {
		if v.Bytes.Load() == 0 {
			t.Errorf("viewer %d received nothing", i)
		}
	}

	// SIGTERM node-3: not ready at once, no longer chosen, its viewers
	// play on until the grace ends, then it exits 0.
	drained := nodes[2]
	drained.Cmd.Process.Signal(syscall.SIGTERM)
	sigAt := time.Now()
	testutil.WaitFor(t, time.Second, "/readyz to answer 503", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(drained.HTTPURL + "/readyz")
		return code == http.StatusServiceUnavailable
	})
	for i := range 60 {
		if id, _ := route(t, nodes[i%2].HTTPURL, plan[i], "flv"); id == "node-3" {
			t.Fatalf("route chose draining node-3 %v after SIGTERM", time.Since(sigAt).Round(time.Millisecond))
		}
	}
	mine := placed["node-3"]
	last := make([]int64, len(mine))
	for time.Since(sigAt) < 6*time.Second {
		time.Sleep(2 * time.Second)
		for i, v := range mine {
			n := v.Bytes.Load()
			if n <= last[i] {
				t.Fatalf("a viewer on the draining node stopped receiving %v after SIGTERM", time.Since(sigAt).Round(time.Second))
			}
			last[i] = n
		}
	}
	if err := drained.Exit(t, 20*time.Second); err != nil {
		t.Errorf("drained node exited with %v, want 0", err)
	}
	if d := time.Since(sigAt); d < 8*time.Second {
		t.Errorf("drained node exited %v after SIGTERM, before its 8 s grace", d.Round(time.Millisecond))
	}
}
