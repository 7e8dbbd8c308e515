//go:build unix

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
		if p.State != "stopped" { // API-added pushes this node does not run
			states = append(states, p.State)
		}
	}
	return states
}

// pushing reports whether the node at base runs n pushes of name, all
// pushing.
func pushing(t *testing.T, base, name string, n int) bool {
	s := statesOf(t, base, name)
	return len(s) == n && !slices.ContainsFunc(s, func(st string) bool { return st != "pushing" })
}

// TestPushFailover: in a three-node cluster only the stream's owner pushes
// it; the owner is killed, the publisher reconnects to another node with
// its key, and the push resumes from the new owner, never from two nodes:
// each target never has more than one push connection open.
func TestPushFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	nginx := e2eutil.StartNginxRTMP(t, 0)
	// Each target is reached through a proxy of its own that counts the
	// push connections open at once: never more than one.
	toConfigTarget := startProxy(t, "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", nginx.Port), 0)
	toAPITarget := startProxy(t, "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", nginx.Port), 0)
	red := testutil.StartRedis(t, 0)
	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("push_allow_private: true\napps:\n  live:\n    push: [\"rtmp://%s/live/{stream}\"]\n", toConfigTarget.Addr())), 0o600)
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
	// A push added through B, which does not own the stream, is kept in
	// the registry: A, the owner, runs it.
	apiTarget := fmt.Sprintf("rtmp://%s/live/api-copy?key=api-target-key", toAPITarget.Addr())
	req, _ := http.NewRequest(http.MethodPost, b.HTTPURL+"/api/v1/streams/"+name+"/pushes", strings.NewReader(`{"url":"`+apiTarget+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST pushes through B: %v %v", resp, err)
	}
	resp.Body.Close()
	testutil.WaitFor(t, 15*time.Second, "A to push to both targets", func() bool { return pushing(t, a.HTTPURL, name, 2) })
	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", nginx.Port, name))
	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/api-copy", nginx.Port))
	if _, m := e2eutil.HTTPGet(t, a.HTTPURL+"/metrics"); !strings.Contains(string(m), `meshcast_pushes{state="pushing"} 2`) ||
		!strings.Contains(string(m), `meshcast_push_bytes_sent_total{push="config-1",stream="live/pushed"}`) || strings.Contains(string(m), "api-target-key") {
		t.Errorf("A's metrics: want two pushes pushing, the bytes of each, no key:\n%s", grepLines(string(m), "meshcast_push"))
	}
	if _, body := e2eutil.HTTPGet(t, b.HTTPURL+"/api/v1/streams/"+name+"/pushes"); strings.Contains(string(body), "api-target-key") {
		t.Errorf("the pushes API shows a target's key: %s", body)
	}
	rc := redis.NewClient(&redis.Options{Addr: red.Addr()})
	defer rc.Close()
	keys, _ := rc.Keys(context.Background(), "*pushes*").Result()
	if len(keys) != 1 {
		t.Errorf("the registry's pushes records: %v, want one", keys)
	} else if rec, _ := rc.Get(context.Background(), keys[0]).Result(); strings.Contains(rec, "api-target-key") || strings.Contains(rec, "api-copy") {
		t.Errorf("the registry's pushes record is not sealed: %q", rec)
	}
	for _, n := range []*e2eutil.Proc{b, c} {
		if s := statesOf(t, n.HTTPURL, name); len(s) != 0 {
			t.Errorf("%s pushes %v too, want only the owner", n.HTTPURL, s)
		}
	}

	a.Kill(t)
	stop()
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s?key=%s", c.RTMPPort, name, key))
	testutil.WaitFor(t, 20*time.Second, "C, the new owner, to push to both targets", func() bool { return pushing(t, c.HTTPURL, name, 2) })
	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/%s", nginx.Port, name))
	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/api-copy", nginx.Port))
	if s := statesOf(t, b.HTTPURL, name); len(s) != 0 {
		t.Errorf("B pushes %v after the failover, want only the new owner", s)
	}
	for target, p := range map[string]*faultProxy{"the configured target": toConfigTarget, "the API's target": toAPITarget} {
		if p.Most() != 1 {
			t.Errorf("%s had up to %d push connections open at once, want 1", target, p.Most())
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
