//go:build unix

package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestRedisClusterBackend runs two meshcast processes on a Redis Cluster of
// three masters (the registry's third backend, after memory and a single
// Redis or Sentinel): both list each other, a stream published on A plays
// on B through a relay with its codecs, B's relay is listed by A, and once
// A's publisher leaves for good the stream is gone from both.
func TestRedisClusterBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	t.Parallel()
	testutil.Need(t, "redis-server", "redis-cli", "ffmpeg", "ffprobe")
	rc := testutil.StartRedisCluster(t, 3)
	ids := []string{"node-a", "node-b"}
	a := e2eutil.StartProcess(t, clusterFlags(rc.URL(), ids[0], "--publisher-grace", "1s")...)
	b := e2eutil.StartProcess(t, clusterFlags(rc.URL(), ids[1])...)
	waitListed(t, []*e2eutil.Proc{a, b}, ids)

	const name = "live/oncluster"
	stop := e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", a.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)
	e2eutil.ProbeCodecs(t, b.HTTPURL+"/"+name+".flv")
	viewer := e2eutil.PlayRTMP(t, b.RTMPAddr, name)
	viewer.WaitFrames(t, 30, 20*time.Second)
	testutil.WaitFor(t, 10*time.Second, "A to list B's relay, owned by A", func() bool {
		s, ok := e2eutil.GetStream(t, a.HTTPURL, name)
		return ok && s.Owner != nil && s.Owner.Node == "node-a" && len(s.Relays) == 1 && s.Relays[0].Node == "node-b"
	})

	stop()
	testutil.WaitFor(t, 20*time.Second, "the stream to end on both nodes", func() bool {
		_, onA := e2eutil.GetStream(t, a.HTTPURL, name)
		_, onB := e2eutil.GetStream(t, b.HTTPURL, name)
		return !onA && !onB
	})
}
