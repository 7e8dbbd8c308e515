//go:build unix

package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// statesOf is what a node's pushes of name are doing.
func statesOf(t *testing.T, base, name string) []string {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, base+"/api/v1/streams/"+name+"/pushes")
	var out struct {
		Pushes []struct {
			State string `json:"state"`
		} `json:"pushes"`
	}
	if code != 200 || json.Unmarshal(body, &out) != nil {
		return nil
	}
	var states []string
	for _, p := range out.Pushes {
		states = append(states, p.State)
	}
	return states
}

// TestPushFailover: in a three-node cluster only the stream's owner pushes
// it; the owner is killed, the publisher reconnects to another node with
// its key, and the push resumes from the new owner, never from two nodes.
func TestPushFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	nginx := e2eutil.StartNginxRTMP(t, 0)
	red := testutil.StartRedis(t, 0)
	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("push_allow_private: true\napps:\n  live:\n    push: [\"rtmp://127.0.0.1:%d/live/{stream}\"]\n", nginx.Port)), 0o600)
	const key = "push-failover-key-01"
	flags := func(id string) []string {
		return []string{"--config", cfg, "--redis", red.URL(), "--cluster-secret", "cluster-secret-of-the-tests", "--node-id", id,
			"--advertise-host", "127.0.0.1", "--publish-keys", "live=" + key}
	}
	a := e2eutil.StartProcess(t, flags("node-a")...)
	b := e2eutil.StartProcess(t, flags("node-b")...)
	c := e2eutil.StartProcess(t, flags("node-c")...)
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(b.HTTPURL)) == 3 })

	const name = "live/pushed"
	stop := e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s?key=%s", a.RTMPPort, name, key))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, name)
	// A viewer on B makes B relay the stream: a relay never pushes.
	e2eutil.PlayRTMP(t, b.RTMPAddr, name).WaitFrames(t, 30, 20*time.Second)
	testutil.WaitFor(t, 15*time.Second, "A to push", func() bool {
		s := statesOf(t, a.HTTPURL, name)
		return len(s) == 1 && s[0] == "pushing"
	})
	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", nginx.Port, name))
	for _, n := range []*e2eutil.Proc{b, c} {
		if s := statesOf(t, n.HTTPURL, name); len(s) != 0 {
			t.Errorf("%s pushes %v too, want only the owner", n.HTTPURL, s)
		}
	}

	a.Kill(t)
	stop()
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s?key=%s", c.RTMPPort, name, key))
	testutil.WaitFor(t, 20*time.Second, "C, the new owner, to push", func() bool {
		s := statesOf(t, c.HTTPURL, name)
		return len(s) == 1 && s[0] == "pushing"
	})
	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", nginx.Port, name))
	if s := statesOf(t, b.HTTPURL, name); len(s) != 0 {
		t.Errorf("B pushes %v after the failover, want only the new owner", s)
	}
}
