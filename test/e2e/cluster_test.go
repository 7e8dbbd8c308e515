//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
)

// apiStream is the part of the streams API the cluster tests read.
type apiStream struct {
	Live      bool           `json:"live"`
	Viewers   map[string]int `json:"viewers"`
	Publisher struct {
		Protocol string `json:"protocol"`
	} `json:"publisher"`
	Owner *struct {
		Node  string `json:"node"`
		Epoch uint64 `json:"epoch"`
	} `json:"owner"`
	Relays []struct {
		Node     string `json:"node"`
		Upstream string `json:"upstream"`
	} `json:"relays"`
}

func getStream(t *testing.T, httpURL, name string) (apiStream, bool) {
	t.Helper()
	code, body := httpGet(t, httpURL+"/api/v1/streams/"+name)
	var s apiStream
	if code != 200 || json.Unmarshal(body, &s) != nil {
		return s, false
	}
	return s, true
}

// nodeIDs lists the live nodes a node's API reports; none when it cannot.
func nodeIDs(httpURL string) []string {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(httpURL + "/api/v1/nodes")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out struct {
		Nodes []struct {
			ID string `json:"id"`
		} `json:"nodes"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	var ids []string
	for _, n := range out.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// probeCodecs runs ffprobe on a live URL and checks for H.264 and AAC.
func probeCodecs(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json", url).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	if !strings.Contains(string(b), `"h264"`) || !strings.Contains(string(b), `"aac"`) {
		t.Errorf("ffprobe %s: %s, want h264 and aac", url, b)
	}
}

// publishUntilOwned publishes with the README's ffmpeg command until node
// id owns the stream, as a publisher retrying its connection would.
func publishUntilOwned(t *testing.T, p *proc, id, name string, timeout time.Duration) (stop func()) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		stop := publishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", p.rtmpPort, name))
		for range 20 {
			s, ok := getStream(t, p.httpURL, name)
			if ok && s.Live && s.Owner != nil && s.Owner.Node == id && s.Publisher.Protocol == "rtmp" {
				return stop
			}
			time.Sleep(100 * time.Millisecond)
		}
		stop()
	}
	t.Fatalf("%s never took %s within %v", p.httpURL, name, timeout)
	return nil
}

// TestCluster runs three meshcast processes sharing a real Redis: relays,
// the tree topology, ownership, a Redis outage, and the owner's crash.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	whole := t // what outlives a subtest is cleaned up with the whole test
	red := testutil.StartRedis(t, 0)
	const secret = "cluster-secret-of-the-tests"
	flags := func(id string, more ...string) []string {
		return append([]string{"--redis", red.URL(), "--cluster-secret", secret, "--node-id", id,
			"--advertise-host", "127.0.0.1", "--publisher-grace", "2s"}, more...)
	}
	aRTMP, aHTTP := testutil.FreePort(t), testutil.FreePort(t)
	a := startProcessAt(t, aRTMP, aHTTP, flags("node-a")...)
	b := startProcess(t, flags("node-b")...)
	c := startProcess(t, flags("node-c", "--parent", "node-b")...)
	waitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(nodeIDs(b.httpURL)) == 3 })

	const name = "live/stream"
	stopPublisher := publishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", a.rtmpPort, name))
	waitLiveHTTP(t, a.httpURL, name)

	t.Run("play from other nodes over every protocol", func(t *testing.T) {
		for _, p := range []*proc{b, c} {
			probeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", p.rtmpPort, name))
			probeCodecs(t, p.httpURL+"/"+name+".flv")
			probeCodecs(t, p.httpURL+"/"+name+"/index.m3u8")
		}
	})

	var viewers []*rtmpViewer
	t.Cleanup(func() {
		for _, v := range viewers {
			v.close()
		}
	})
	t.Run("100 viewers on B, one upstream from A", func(t *testing.T) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := dialRTMPViewer(b.rtmpAddr, name)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				viewers = append(viewers, v)
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal("viewer on B:", err)
		}
		waitFor(t, 20*time.Second, "every viewer on B to get 30 frames", func() bool {
			for _, v := range viewers {
				if v.video.Load() < 30 {
					return false
				}
			}
			return true
		})
		// C pulls through its parent B, so A serves B alone, over one connection.
		waitFor(t, 10*time.Second, "A to list B, and only B, as its consumer", func() bool {
			s, ok := getStream(t, a.httpURL, name)
			if !ok || s.Viewers["relay"] != 1 {
				return false
			}
			var fromA, fromB []string
			for _, r := range s.Relays {
				switch r.Upstream {
				case "node-a":
					fromA = append(fromA, r.Node)
				case "node-b":
					fromB = append(fromB, r.Node)
				}
			}
			return len(fromA) == 1 && fromA[0] == "node-b" && len(fromB) == 1 && fromB[0] == "node-c"
		})
	})
	if len(viewers) < 10 {
		t.Fatal("no viewers on B to follow")
	}
	watch := viewers[:10] // followed through the outage and the failover

	t.Run("second publisher on C refused while A lives", func(t *testing.T) {
		err := tryPublish(t, c.rtmpAddr, "", name)
		if !errors.Is(err, rtmp.ErrRefused) || !strings.Contains(err.Error(), "NetStream.Publish.BadName") {
			t.Fatalf("publish on C: %v, want a refusal with NetStream.Publish.BadName", err)
		}
	})

	t.Run("Redis down for 20 s", func(t *testing.T) {
		red.Stop(t)
		stopAt := time.Now()
		// Nothing on the media path waits on Redis: every second, every
		// followed viewer has new frames.
		last := make([]int64, len(watch))
		for i, v := range watch {
			last[i] = v.video.Load()
		}
		for time.Since(stopAt) < 20*time.Second {
			time.Sleep(time.Second)
			for i, v := range watch {
				n := v.video.Load()
				if n <= last[i] {
					t.Errorf("viewer %d on B stalled at %d frames %v into the outage", i, n, time.Since(stopAt).Round(time.Second))
				}
				last[i] = n
			}
		}
		// New claims fail with a clear error meanwhile.
		if err := tryPublish(t, c.rtmpAddr, "", "live/other"); !errors.Is(err, rtmp.ErrRefused) {
			t.Errorf("publish during the outage: %v, want a refusal", err)
		}
		red = testutil.StartRedis(whole, red.Port) // back, and empty
		backAt := time.Now()
		waitFor(t, 10*time.Second, "nodes and the stream to be back in the registry", func() bool {
			s, ok := getStream(t, b.httpURL, name)
			return len(nodeIDs(b.httpURL)) == 3 && ok && s.Owner != nil && s.Owner.Node == "node-a"
		})
		t.Logf("registry repopulated %v after Redis returned", time.Since(backAt).Round(10*time.Millisecond))
	})

	t.Run("A crashes; the publisher moves to C; B's viewers go on", func(t *testing.T) {
		before, ok := getStream(t, b.httpURL, name)
		if !ok || before.Owner == nil {
			t.Fatal("no owner before the crash")
		}
		a.kill(t)
		stopPublisher()
		stopPublisher = publishUntilOwned(whole, c, "node-c", name, 30*time.Second)
		published := time.Now()
		for i, v := range watch {
			n := v.video.Load()
			waitFor(t, 5*time.Second-time.Since(published), fmt.Sprintf("viewer %d on B to get frames again", i), func() bool {
				return v.video.Load() > n
			})
		}
		t.Logf("frames back on B %v after the new publish", time.Since(published).Round(10*time.Millisecond))
		for i, v := range watch {
			if err := v.err.Load(); err != nil {
				t.Errorf("viewer %d on B lost its connection: %v", i, err)
			}
			if v.backTS.Load() != 0 {
				t.Errorf("viewer %d on B saw timestamps go backwards", i)
			}
		}
		after, ok := getStream(t, c.httpURL, name)
		if !ok || after.Owner == nil || after.Owner.Node != "node-c" || after.Owner.Epoch <= before.Owner.Epoch {
			t.Errorf("owner after failover %+v, want node-c with an epoch above %d", after.Owner, before.Owner.Epoch)
		}
	})

	t.Run("A restarts with its node ID and does not take the stream back", func(t *testing.T) {
		owner, _ := getStream(t, c.httpURL, name)
		a2 := startProcessAt(whole, aRTMP, aHTTP, flags("node-a")...)
		waitFor(t, 10*time.Second, "A back in the registry", func() bool { return len(nodeIDs(a2.httpURL)) == 3 })
		time.Sleep(3 * time.Second) // a few of A's heartbeats
		now, ok := getStream(t, c.httpURL, name)
		if !ok || now.Owner == nil || owner.Owner == nil || *now.Owner != *owner.Owner {
			t.Errorf("owner after A restarted: %+v, want %+v", now.Owner, owner.Owner)
		}
		if err := tryPublish(t, a2.rtmpAddr, "", name); !errors.Is(err, rtmp.ErrRefused) {
			t.Errorf("publish on the restarted A: %v, want a refusal", err)
		}
		for _, v := range watch {
			v.waitFrames(t, 10, 5*time.Second)
		}
	})
}
