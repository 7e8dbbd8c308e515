//go:build unix

package cluster

import (
	"strings"
	"testing"
	"time"

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
