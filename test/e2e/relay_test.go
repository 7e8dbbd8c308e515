//go:build unix

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/streamname"
)

// A relay closes once its node has had no viewers of the stream for
// --relay-idle, and opens again for the next viewer. The two nodes run in
// this process and share one in-memory registry.
func TestRelayClosesWhenIdle(t *testing.T) {
	nodes := startClusterNodes(t, func(c *config.Config) { c.RelayIdle = time.Second }, "node-a", "node-b")
	a, b := nodes[0], nodes[1]
	publishFFmpeg(t, a.rtmpURL("live/stream"))
	src := waitLive(t, a, "live/stream")

	pulls := func() int { return src.Stats().ReaderCount["relay"] }
	for round := range 2 {
		v := playRTMP(t, b.RTMPAddr().String(), "live/stream")
		v.waitFrames(t, 30, 15*time.Second)
		if pulls() != 1 {
			t.Fatalf("round %d: A serves %d pulls, want 1", round, pulls())
		}
		v.close()
		waitFor(t, 10*time.Second, "B's relay to close after a second without viewers", func() bool {
			return pulls() == 0 && b.Hub.Get(streamname.Name("live/stream")) == nil
		})
	}
	waitFor(t, 5*time.Second, "B's relay record to go", func() bool {
		code, body := httpGet(t, a.httpURL+"/api/v1/streams/live/stream")
		return code == 200 && strings.Contains(string(body), `"relays": []`)
	})
}
