//go:build unix

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
)

// flvViewer is a real HTTP-FLV client: it reads the stream and counts bytes.
type flvViewer struct {
	bytes  atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
}

func playFLV(t *testing.T, url string) *flvViewer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v := &flvViewer{cancel: cancel, done: make(chan struct{})}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/x-flv" {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	go func() {
		defer close(v.done)
		defer resp.Body.Close()
		br := bufio.NewReaderSize(resp.Body, 32<<10)
		buf := make([]byte, 32<<10)
		for {
			n, err := br.Read(buf)
			v.bytes.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return v
}

func (v *flvViewer) close() { v.cancel(); <-v.done }

// route asks a node's route API where to play name over proto.
func route(t *testing.T, httpURL, name, proto string) (node, url string) {
	t.Helper()
	code, body := httpGet(t, httpURL+"/api/v1/route?stream="+name+"&proto="+proto)
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
	code, body := httpGet(t, httpURL+"/api/v1/nodes")
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

// smallFLV makes a 20 s 320x180 H.264/AAC FLV at about 250 kbit/s for many
// cheap publishers (ffmpeg -c copy).
func smallFLV(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "small.flv")
	b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "20", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "200k", "-g", "50", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "48k", "-f", "flv", out).CombinedOutput()
	if err != nil {
		t.Fatalf("make small.flv: %v\n%s", err, b)
	}
	return out
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
	nodes := []*proc{startProcess(t, flags("node-1")...), startProcess(t, flags("node-2")...), startProcess(t, flags("node-3")...)}
	waitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(nodeIDs(nodes[0].httpURL)) == 3 })

	// 30 streams, each published to one of the nodes.
	src := smallFLV(t)
	for i := range 30 {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1",
			"-i", src, "-c", "copy", "-f", "flv", fmt.Sprintf("rtmp://127.0.0.1:%d/live/s%d", nodes[i%3].rtmpPort, i))
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); cmd.Wait() })
	}
	for i := range 30 {
		waitLiveHTTP(t, nodes[i%3].httpURL, fmt.Sprintf("live/s%d", i))
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
	var viewers []*flvViewer
	placed := map[string][]*flvViewer{}
	t.Cleanup(func() {
		for _, v := range viewers {
			v.close()
		}
	})
	// Viewers arrive over about ten seconds, asking the three nodes' route
	// APIs in turn, as a player behind DNS round robin would.
	for i, name := range plan {
		id, url := route(t, nodes[i%3].httpURL, name, "flv")
		v := playFLV(t, url)
		mu.Lock()
		viewers = append(viewers, v)
		placed[id] = append(placed[id], v)
		mu.Unlock()
		time.Sleep(30 * time.Millisecond)
	}
	var counts map[string]int
	waitFor(t, 10*time.Second, "the nodes to report 300 viewers", func() bool {
		counts = nodeViewers(t, nodes[0].httpURL)
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
		if v.bytes.Load() == 0 {
			t.Errorf("viewer %d received nothing", i)
		}
	}

	// SIGTERM node-3: not ready at once, no longer chosen, its viewers
	// play on until the grace ends, then it exits 0.
	drained := nodes[2]
	drained.cmd.Process.Signal(syscall.SIGTERM)
	sigAt := time.Now()
	waitFor(t, time.Second, "/readyz to answer 503", func() bool {
		code, _ := httpGetQuiet(drained.httpURL + "/readyz")
		return code == http.StatusServiceUnavailable
	})
	for i := range 60 {
		if id, _ := route(t, nodes[i%2].httpURL, plan[i], "flv"); id == "node-3" {
			t.Fatalf("route chose draining node-3 %v after SIGTERM", time.Since(sigAt).Round(time.Millisecond))
		}
	}
	mine := placed["node-3"]
	last := make([]int64, len(mine))
	for time.Since(sigAt) < 6*time.Second {
		time.Sleep(2 * time.Second)
		for i, v := range mine {
			n := v.bytes.Load()
			if n <= last[i] {
				t.Fatalf("a viewer on the draining node stopped receiving %v after SIGTERM", time.Since(sigAt).Round(time.Second))
			}
			last[i] = n
		}
	}
	if err := drained.exit(t, 20*time.Second); err != nil {
		t.Errorf("drained node exited with %v, want 0", err)
	}
	if d := time.Since(sigAt); d < 8*time.Second {
		t.Errorf("drained node exited %v after SIGTERM, before its 8 s grace", d.Round(time.Millisecond))
	}
}
