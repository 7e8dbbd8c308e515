//go:build unix

package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// clusterFlags are the flags of a node of these tests' clusters.
func clusterFlags(redisURL, id string, more ...string) []string {
	return append([]string{"--redis", redisURL, "--cluster-secret", clusterSecret, "--node-id", id,
		"--advertise-host", "127.0.0.1"}, more...)
}

// clusterSecret is the cluster secret of clusterFlags.
const clusterSecret = "cluster-secret-of-the-tests"

// startRedisNodes starts meshcast processes named ids on a Redis of their
// own, each with clusterFlags and the flags more returns for its ID (more
// may be nil), and waits until every node lists them all.
func startRedisNodes(t *testing.T, more func(id string) []string, ids ...string) []*e2eutil.Proc {
	t.Helper()
	testutil.Need(t, "redis-server")
	red := testutil.StartRedis(t, 0)
	procs := make([]*e2eutil.Proc, len(ids))
	for i, id := range ids {
		var extra []string
		if more != nil {
			extra = more(id)
		}
		procs[i] = e2eutil.StartProcess(t, clusterFlags(red.URL(), id, extra...)...)
	}
	waitListed(t, procs, ids)
	return procs
}

// waitListed waits until every node of procs lists every node of ids.
func waitListed(t *testing.T, procs []*e2eutil.Proc, ids []string) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, "every node to list all of "+strings.Join(ids, ", "), func() bool {
		for _, p := range procs {
			if m, _ := missingNodes(p.HTTPURL, ids); len(m) > 0 {
				return false
			}
		}
		return true
	})
}

// missingNodes returns the IDs of want that the node at httpURL does not
// list in GET /api/v1/nodes, and how long the answer took.
func missingNodes(httpURL string, want []string) ([]string, time.Duration) {
	start := time.Now()
	got := e2eutil.NodeIDs(httpURL)
	took := time.Since(start)
	var missing []string
	for _, id := range want {
		if !slices.Contains(got, id) {
			missing = append(missing, id)
		}
	}
	return missing, took
}

// TestRedisSlow puts every reply of Redis 500 ms away from three meshcast
// processes (a proxy in the test holds them): no node is ever declared
// dead, the stream never stalls on its owner or on a relaying edge, and a
// new publish on another node is accepted.
func TestRedisSlow(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	const delay = 500 * time.Millisecond
	red := testutil.StartRedis(t, 0)
	proxy := startProxy(t, "127.0.0.1:0", red.Addr(), delay)
	url := "redis://" + proxy.Addr() + "/0"
	ids := []string{"node-a", "node-b", "node-c"}
	a := e2eutil.StartProcess(t, clusterFlags(url, ids[0])...)
	b := e2eutil.StartProcess(t, clusterFlags(url, ids[1])...)
	c := e2eutil.StartProcess(t, clusterFlags(url, ids[2])...)
	procs := []*e2eutil.Proc{a, b, c}
	joined := time.Now()
	waitListed(t, procs, ids)
	t.Logf("all three nodes listed by each %v after the last started", time.Since(joined).Round(10*time.Millisecond))

	const name = "live/slow"
	publishAt := time.Now()
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s", a.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)
	t.Logf("first publish live on node-a %v after ffmpeg started", time.Since(publishAt).Round(10*time.Millisecond))
	onOwner := e2eutil.PlayRTMP(t, a.RTMPAddr, name)
	onEdge := e2eutil.PlayRTMP(t, b.RTMPAddr, name)
	onOwner.WaitFrames(t, 30, 20*time.Second)
	onEdge.WaitFrames(t, 30, 20*time.Second)
	onOwner.Gaps.Reset()
	onEdge.Gaps.Reset()

	// A second stream is published on C while every reply is late.
	const second = "live/second"
	secondAt := time.Now()
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s", c.RTMPPort, second))

	var (
		secondLive time.Duration
		slowest    time.Duration
		checks     int
	)
	start := time.Now()
	lastOwner, lastEdge := onOwner.Video.Load(), onEdge.Video.Load()
	for time.Since(start) < 15*time.Second {
		time.Sleep(time.Second)
		for _, p := range procs {
			missing, took := missingNodes(p.HTTPURL, ids)
			slowest = max(slowest, took)
			checks++
			if len(missing) > 0 {
				t.Errorf("%v into the test, %s lists no %v", time.Since(start).Round(time.Second), p.HTTPURL, missing)
			}
		}
		for what, v := range map[string]*e2eutil.RTMPViewer{"owner": onOwner, "edge": onEdge} {
			last := &lastOwner
			if what == "edge" {
				last = &lastEdge
			}
			n := v.Video.Load()
			if n <= *last {
				t.Errorf("the viewer on the %s stalled at %d frames", what, n)
			}
			*last = n
		}
		if secondLive == 0 {
			if s, ok := e2eutil.GetStream(t, c.HTTPURL, second); ok && s.Live && s.Owner != nil && s.Owner.Node == "node-c" {
				secondLive = time.Since(secondAt)
			}
		}
	}
	if secondLive == 0 {
		t.Errorf("the publish on node-c is not live and owned by node-c %v after it started", time.Since(secondAt).Round(time.Second))
	}
	longest := max(onOwner.Gaps.Max(), onEdge.Gaps.Max())
	t.Logf("over 15 s: %d node listings, each of all three nodes, the slowest %v; publish on node-c live and owned %v after ffmpeg started; longest video gap %v (owner %v, edge %v)",
		checks, slowest.Round(10*time.Millisecond), secondLive.Round(10*time.Millisecond), longest.Round(10*time.Millisecond),
		onOwner.Gaps.Max().Round(10*time.Millisecond), onEdge.Gaps.Max().Round(10*time.Millisecond))
	if longest > time.Second {
		t.Errorf("longest video gap %v, want under 1 s: media never waits on the registry", longest)
	}
	for what, v := range map[string]*e2eutil.RTMPViewer{"owner": onOwner, "edge": onEdge} {
		if err, _ := v.Err.Load().(error); err != nil {
			t.Errorf("the viewer on the %s lost its connection: %v", what, err)
		}
	}
	// The store was slow, never unreachable: not one call timed out.
	for i, p := range procs {
		if log := p.Stderr.String(); strings.Contains(log, "registry unreachable") {
			t.Errorf("%s found the registry unreachable:\n%s", ids[i], log)
		}
	}
}

// TestRedisOutage stops Redis for 60 s (7 minutes with
// MESHCAST_LONG_TESTS=1) under two meshcast processes with a 1 s node
// timeout, and starts it again on the same port, empty, as a Redis without
// persistence comes back: viewers on the owner and on a relaying edge never
// stall, and the nodes put the registry back whole (both nodes, the
// stream's claim at the same epoch, the edge's relay) within 10 s.
func TestRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	outage := 60 * time.Second
	if os.Getenv("MESHCAST_LONG_TESTS") == "1" {
		outage = 7 * time.Minute
	}
	red := testutil.StartRedis(t, 0)
	ids := []string{"node-a", "node-b"}
	a := e2eutil.StartProcess(t, clusterFlags(red.URL(), ids[0], "--node-timeout", "1s")...)
	b := e2eutil.StartProcess(t, clusterFlags(red.URL(), ids[1], "--node-timeout", "1s")...)
	testutil.WaitFor(t, 10*time.Second, "both nodes in the registry", func() bool {
		m, _ := missingNodes(b.HTTPURL, ids)
		return len(m) == 0
	})

	const name = "live/outage"
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s", a.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)
	onOwner := e2eutil.PlayRTMP(t, a.RTMPAddr, name)
	onEdge := e2eutil.PlayRTMP(t, b.RTMPAddr, name)
	flvEdge := e2eutil.PlayFLV(t, b.HTTPURL+"/"+name+".flv")
	onOwner.WaitFrames(t, 30, 20*time.Second)
	onEdge.WaitFrames(t, 30, 20*time.Second)
	whole := func() (epoch uint64, ok bool) {
		if m, _ := missingNodes(b.HTTPURL, ids); len(m) > 0 {
			return 0, false
		}
		if m, _ := missingNodes(a.HTTPURL, ids); len(m) > 0 {
			return 0, false
		}
		s, ok := e2eutil.GetStream(t, b.HTTPURL, name)
		if !ok || s.Owner == nil || s.Owner.Node != "node-a" || len(s.Relays) != 1 || s.Relays[0].Node != "node-b" {
			return 0, false
		}
		return s.Owner.Epoch, true
	}
	var before uint64
	testutil.WaitFor(t, 10*time.Second, "the registry to hold both nodes, the claim and the relay", func() bool {
		var ok bool
		before, ok = whole()
		return ok
	})
	onOwner.Gaps.Reset()
	onEdge.Gaps.Reset()
	flvEdge.Gaps.Reset()

	red.Stop(t)
	stopAt := time.Now()
	last := []int64{onOwner.Video.Load(), onEdge.Video.Load(), flvEdge.Video.Load()}
	names := []string{"RTMP on the owner", "RTMP on the edge", "HTTP-FLV on the edge"}
	for time.Since(stopAt) < outage {
		time.Sleep(time.Second)
		now := []int64{onOwner.Video.Load(), onEdge.Video.Load(), flvEdge.Video.Load()}
		for i := range now {
			if now[i] <= last[i] {
				t.Errorf("viewer %s stalled at %d frames %v into the outage", names[i], now[i], time.Since(stopAt).Round(time.Second))
			}
		}
		last = now
	}
	// Publishing needs a claim: refused while the registry is away.
	if err := e2eutil.TryPublish(t, b.RTMPAddr, "", "live/during"); err == nil {
		t.Error("a publish during the outage was accepted without a claim")
	}
	gaps := []time.Duration{onOwner.Gaps.Max(), onEdge.Gaps.Max(), flvEdge.Gaps.Max()}

	red = testutil.StartRedis(t, red.Port) // back, and empty
	backAt := time.Now()
	var after uint64
	testutil.WaitFor(t, 10*time.Second, "the registry to be whole again", func() bool {
		var ok bool
		after, ok = whole()
		return ok
	})
	repaired := time.Since(backAt)
	t.Logf("Redis away %v; longest video gap during it: %v (RTMP owner), %v (RTMP edge), %v (HTTP-FLV edge); registry whole %v after Redis returned empty, claim at epoch %d (was %d)",
		outage, gaps[0].Round(10*time.Millisecond), gaps[1].Round(10*time.Millisecond), gaps[2].Round(10*time.Millisecond),
		repaired.Round(10*time.Millisecond), after, before)
	if after != before {
		t.Errorf("claim back at epoch %d, want the same epoch %d", after, before)
	}
	for i, g := range gaps {
		if g > time.Second {
			t.Errorf("viewer %s: longest video gap %v, want under 1 s", names[i], g)
		}
	}
	for i, v := range []*e2eutil.RTMPViewer{onOwner, onEdge} {
		if err, _ := v.Err.Load().(error); err != nil {
			t.Errorf("viewer %s lost its connection: %v", names[i], err)
		}
	}
	if err, _ := flvEdge.Err.Load().(error); err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("viewer %s lost its connection: %v", names[2], err)
	}
	// New publishes work again.
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/live/after", b.RTMPPort))
	e2eutil.WaitLiveHTTP(t, b.HTTPURL, "live/after")
}

// TestRedisSentinelFailover runs two meshcast processes through three
// sentinels and kills the master under them: viewers on the owner and on
// a relaying edge never stall, and within 10 s the promoted replica has
// both nodes and the stream's claim at its epoch, and takes a new claim.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	s := testutil.StartRedisSentinel(t)
	ids := []string{"node-a", "node-b"}
	a := e2eutil.StartProcess(t, clusterFlags(s.URL(), ids[0])...)
	b := e2eutil.StartProcess(t, clusterFlags(s.URL(), ids[1])...)
	testutil.WaitFor(t, 20*time.Second, "both nodes in the registry", func() bool {
		m, _ := missingNodes(b.HTTPURL, ids)
		return len(m) == 0
	})
	const name = "live/failover"
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/%s", a.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)
	onOwner := e2eutil.PlayRTMP(t, a.RTMPAddr, name)
	onEdge := e2eutil.PlayRTMP(t, b.RTMPAddr, name)
	onOwner.WaitFrames(t, 30, 20*time.Second)
	onEdge.WaitFrames(t, 30, 20*time.Second)
	// The replica's first copy of the master takes 5 s (Redis 7's
	// diskless sync delay): the failover below is of a replica in sync.
	time.Sleep(6 * time.Second)
	before, ok := e2eutil.GetStream(t, b.HTTPURL, name)
	if !ok || before.Owner == nil {
		t.Fatal("no owner before the failover")
	}
	onOwner.Gaps.Reset()
	onEdge.Gaps.Reset()

	s.Master.Kill()
	killed := time.Now()
	var whole time.Duration
	last := []int64{onOwner.Video.Load(), onEdge.Video.Load()}
	for time.Since(killed) < 15*time.Second {
		time.Sleep(time.Second)
		now := []int64{onOwner.Video.Load(), onEdge.Video.Load()}
		for i, what := range []string{"owner", "edge"} {
			if now[i] <= last[i] {
				t.Errorf("the viewer on the %s stalled at %d frames %v after the kill", what, now[i], time.Since(killed).Round(time.Second))
			}
		}
		last = now
		if whole == 0 {
			st, ok := e2eutil.GetStream(t, b.HTTPURL, name)
			m, _ := missingNodes(b.HTTPURL, ids)
			if ok && len(m) == 0 && st.Owner != nil && st.Owner.Node == "node-a" && st.Owner.Epoch == before.Owner.Epoch {
				whole = time.Since(killed)
			}
		}
	}
	if whole == 0 || whole > 10*time.Second {
		t.Errorf("registry whole on the promoted replica %v after the kill, want within 10 s", whole)
	}
	publishAt := time.Now()
	e2eutil.PublishLoop(t, e2eutil.Input(t), fmt.Sprintf("rtmp://127.0.0.1:%d/live/promoted", b.RTMPPort))
	e2eutil.WaitLiveHTTP(t, b.HTTPURL, "live/promoted")
	t.Logf("after the master's kill: registry whole (both nodes, the claim at epoch %d) %v later; longest video gap %v (owner), %v (edge); a new publish live %v after ffmpeg started",
		before.Owner.Epoch, whole.Round(10*time.Millisecond), onOwner.Gaps.Max().Round(10*time.Millisecond),
		onEdge.Gaps.Max().Round(10*time.Millisecond), time.Since(publishAt).Round(10*time.Millisecond))
	for what, v := range map[string]*e2eutil.RTMPViewer{"owner": onOwner, "edge": onEdge} {
		if g := v.Gaps.Max(); g > time.Second {
			t.Errorf("the viewer on the %s: longest video gap %v, want under 1 s", what, g)
		}
		if err, _ := v.Err.Load().(error); err != nil {
			t.Errorf("the viewer on the %s lost its connection: %v", what, err)
		}
	}
}
