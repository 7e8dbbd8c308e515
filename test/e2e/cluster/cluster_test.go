//go:build unix

package cluster

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

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
	const key = "publish-key-of-the-tests"
	flags := func(id string, more ...string) []string {
		return append([]string{"--redis", red.URL(), "--cluster-secret", secret, "--node-id", id,
			"--advertise-host", "127.0.0.1", "--publisher-grace", "2s", "--publish-keys", "live=" + key}, more...)
	}
	aRTMP, aHTTP := testutil.FreePort(t), testutil.FreePort(t)
	a := e2eutil.StartProcessAt(t, aRTMP, aHTTP, flags("node-a")...)
	b := e2eutil.StartProcess(t, flags("node-b")...)
	c := e2eutil.StartProcess(t, flags("node-c", "--parent", "node-b")...)
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(b.HTTPURL)) == 3 })

	const name = "live/stream"
	// The publisher presents its key, so the claim carries its credential.
	stopPublisher := e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s?key=%s", a.RTMPPort, name, key))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)

	t.Run("play from other nodes over every protocol", func(t *testing.T) {
		for _, p := range []*e2eutil.Proc{b, c} {
			e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", p.RTMPPort, name))
			e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+".flv")
			e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+"/index.m3u8")
		}
	})

	var viewers []*e2eutil.RTMPViewer
	t.Cleanup(func() {
		for _, v := range viewers {
			v.Close()
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
				v, err := e2eutil.DialRTMPViewer(b.RTMPAddr, name)
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
		testutil.WaitFor(t, 20*time.Second, "every viewer on B to get 30 frames", func() bool {
			for _, v := range viewers {
				if v.Video.Load() < 30 {
					return false
				}
			}
			return true
		})
		// C pulls through its parent B, so A serves B alone, over one connection.
		testutil.WaitFor(t, 10*time.Second, "A to list B, and only B, as its consumer", func() bool {
			s, ok := e2eutil.GetStream(t, a.HTTPURL, name)
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
		err := e2eutil.TryPublish(t, c.RTMPAddr, "", name)
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
			last[i] = v.Video.Load()
		}
		for time.Since(stopAt) < 20*time.Second {
			time.Sleep(time.Second)
			for i, v := range watch {
				n := v.Video.Load()
				if n <= last[i] {
					t.Errorf("viewer %d on B stalled at %d frames %v into the outage", i, n, time.Since(stopAt).Round(time.Second))
				}
				last[i] = n
			}
		}
		// New claims fail with a clear error meanwhile.
		if err := e2eutil.TryPublish(t, c.RTMPAddr, "", "live/other"); !errors.Is(err, rtmp.ErrRefused) {
			t.Errorf("publish during the outage: %v, want a refusal", err)
		}
		red = testutil.StartRedis(whole, red.Port) // back, and empty
		backAt := time.Now()
		testutil.WaitFor(t, 10*time.Second, "nodes and the stream to be back in the registry", func() bool {
			s, ok := e2eutil.GetStream(t, b.HTTPURL, name)
			return len(e2eutil.NodeIDs(b.HTTPURL)) == 3 && ok && s.Owner != nil && s.Owner.Node == "node-a"
		})
		t.Logf("registry repopulated %v after Redis returned", time.Since(backAt).Round(10*time.Millisecond))
	})

	t.Run("A crashes; the publisher moves to C with its key at once; B's viewers go on", func(t *testing.T) {
		before, ok := e2eutil.GetStream(t, b.HTTPURL, name)
		if !ok || before.Owner == nil {
			t.Fatal("no owner before the crash")
		}
		flvViewer := e2eutil.PlayFLV(t, b.HTTPURL+"/"+name+".flv")
		defer flvViewer.Close()
		hls := e2eutil.WatchHLS(b.HTTPURL + "/" + name + "/index.m3u8")
		defer hls.Close()
		testutil.WaitFor(t, 20*time.Second, "the HTTP-FLV and HLS viewers on B to play", func() bool {
			return flvViewer.Video.Load() > 30 && hls.Sequence() >= 0
		})
		for _, v := range watch {
			v.Gaps.Reset()
		}
		flvViewer.Gaps.Reset()

		a.Kill(t)
		killed := time.Now()
		stopPublisher()
		// The publisher reconnects half a second later, to C, with its
		// key: C takes the claim over without waiting for A's lease.
		time.Sleep(500 * time.Millisecond)
		reconnect := time.Now()
		stopPublisher = e2eutil.PublishFFmpeg(whole, fmt.Sprintf("rtmp://localhost:%d/%s?key=%s", c.RTMPPort, name, key))
		testutil.WaitFor(t, 5*time.Second, "C to own the stream, its publisher accepted", func() bool {
			s, ok := e2eutil.GetStream(t, c.HTTPURL, name)
			return ok && s.Live && s.Owner != nil && s.Owner.Node == "node-c" && s.Publisher.Protocol == "rtmp"
		})
		accepted := time.Since(reconnect)
		hlsBefore := hls.Sequence()
		for i, v := range watch {
			n := v.Video.Load()
			testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("viewer %d on B to get frames again", i), func() bool {
				return v.Video.Load() > n+30
			})
		}
		n := flvViewer.Video.Load()
		testutil.WaitFor(t, 5*time.Second, "the HTTP-FLV viewer on B to get frames again", func() bool {
			return flvViewer.Video.Load() > n+30
		})
		testutil.WaitFor(t, 20*time.Second, "new HLS segments on B", func() bool { return hls.Sequence() > hlsBefore+1 })
		var longest time.Duration
		for i, v := range watch {
			if err := v.Err.Load(); err != nil {
				t.Errorf("RTMP viewer %d on B lost its connection: %v", i, err)
			}
			if v.BackTS.Load() != 0 {
				t.Errorf("RTMP viewer %d on B saw timestamps go backwards", i)
			}
			longest = max(longest, v.Gaps.Max())
		}
		if err := flvViewer.Err.Load(); err != nil {
			t.Errorf("the HTTP-FLV viewer on B lost its connection: %v", err)
		}
		if flvViewer.BackTS.Load() != 0 {
			t.Error("the HTTP-FLV viewer on B saw timestamps go backwards")
		}
		if bad := hls.Bad(); len(bad) != 0 {
			t.Errorf("the HLS player on B got %v", bad)
		}
		longest = max(longest, flvViewer.Gaps.Max())
		t.Logf("publish accepted on C %v after reconnecting (%v after the crash); longest video gap on B %v",
			accepted.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond), longest.Round(10*time.Millisecond))
		// ffmpeg takes some of this to start; the target is 1 s, measured
		// in BENCHMARKS.md.
		if accepted > 3*time.Second {
			t.Errorf("publish accepted %v after reconnecting, want at once (no lease to wait for)", accepted)
		}
		// Kill, reconnect, the new publisher's first keyframe (every 2 s
		// in this input), with room for a loaded machine.
		if longest > 6*time.Second {
			t.Errorf("longest video gap on B %v, want it bounded by the reconnection and a GOP", longest)
		}
		after, ok := e2eutil.GetStream(t, c.HTTPURL, name)
		if !ok || after.Owner == nil || after.Owner.Node != "node-c" || after.Owner.Epoch <= before.Owner.Epoch {
			t.Errorf("owner after failover %+v, want node-c with an epoch above %d", after.Owner, before.Owner.Epoch)
		}
	})

	t.Run("A restarts with its node ID and does not take the stream back", func(t *testing.T) {
		owner, _ := e2eutil.GetStream(t, c.HTTPURL, name)
		a2 := e2eutil.StartProcessAt(whole, aRTMP, aHTTP, flags("node-a")...)
		testutil.WaitFor(t, 10*time.Second, "A back in the registry", func() bool { return len(e2eutil.NodeIDs(a2.HTTPURL)) == 3 })
		time.Sleep(3 * time.Second) // a few of A's heartbeats
		now, ok := e2eutil.GetStream(t, c.HTTPURL, name)
		if !ok || now.Owner == nil || owner.Owner == nil || *now.Owner != *owner.Owner {
			t.Errorf("owner after A restarted: %+v, want %+v", now.Owner, owner.Owner)
		}
		if err := e2eutil.TryPublish(t, a2.RTMPAddr, "", name); !errors.Is(err, rtmp.ErrRefused) {
			t.Errorf("publish on the restarted A: %v, want a refusal", err)
		}
		for _, v := range watch {
			v.WaitFrames(t, 10, 5*time.Second)
		}
	})
}
