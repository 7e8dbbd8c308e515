package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/stream"
)

// A relay closes once its node has had no viewers of the stream for
// --relay-idle, and opens again for the next viewer. The two nodes run in
// this process and share one in-memory registry.
func TestRelayClosesWhenIdle(t *testing.T) {
	reg := cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: 2 * time.Second})
	t.Cleanup(func() { reg.Close() })
	clustered := func(id string) func(*config.Config) {
		return func(c *config.Config) {
			c.NodeID, c.AdvertiseHost = id, "127.0.0.1"
			c.ClusterSecret = "in-process-cluster-secret"
			c.RelayIdle = time.Second
		}
	}
	a := startNodeWith(t, clustered("node-a"), reg)
	b := startNodeWith(t, clustered("node-b"), reg)
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
			return pulls() == 0 && b.Hub.Get(stream.Name("live/stream")) == nil
		})
	}
	if v := fmt.Sprint(reg.Relays(t.Context(), "live/stream")); v != "[] <nil>" {
		t.Errorf("relay records left behind: %s", v)
	}
}
