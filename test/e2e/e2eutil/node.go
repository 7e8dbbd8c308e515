//go:build unix

package e2eutil

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/app"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// Node is a meshcast node running in the test process on loopback.
type Node struct {
	*app.App
	RTMPPort int    // the RTMP listener's port
	HTTPURL  string // http://127.0.0.1:PORT
}

// StartNode starts a node in the test process, with the default
// configuration changed by mod (if set) and every listener (WebRTC's UDP
// socket too) on a loopback port of the system's choosing, and closes it
// when the test ends.
func StartNode(t *testing.T, mod func(*config.Config)) *Node {
	t.Helper()
	return startNodeWith(t, mod, nil)
}

// StartClusterNodes starts in-process nodes named ids that form a cluster
// through one in-memory registry; mod, if set, changes each node's
// configuration further.
func StartClusterNodes(t *testing.T, mod func(*config.Config), ids ...string) []*Node {
	t.Helper()
	reg := cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: 2 * time.Second})
	t.Cleanup(func() { reg.Close() })
	var nodes []*Node
	for _, id := range ids {
		nodes = append(nodes, startNodeWith(t, func(c *config.Config) {
			c.NodeID, c.AdvertiseHost = id, "127.0.0.1"
			c.ClusterSecret = "in-process-cluster-secret"
			if mod != nil {
				mod(c)
			}
		}, reg))
	}
	return nodes
}

// startNodeWith is StartNode with a cluster registry shared with other
// in-process nodes (nil: the node's own).
func startNodeWith(t *testing.T, mod func(*config.Config), reg cluster.Registry) *Node {
	t.Helper()
	cfg := config.Default()
	cfg.RTMPAddr = "127.0.0.1:0"
	cfg.SRTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.WebRTCUDPAddr = "127.0.0.1:0"
	cfg.RTSPAddr, cfg.RTSPSAddr, cfg.RTSPUDPRTPAddr, cfg.RTSPUDPRTCPAddr = "127.0.0.1:0", "127.0.0.1:0", "", ""
	if mod != nil {
		mod(&cfg)
	}
	log := slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var opts []app.Option
	if reg != nil {
		opts = append(opts, app.WithRegistry(reg))
	}
	a, err := app.New(cfg, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &Node{App: a, RTMPPort: a.RTMPAddr().(*net.TCPAddr).Port, HTTPURL: "http://" + a.HTTPAddr().String()}
}

// RTMPURL is the URL users type, with "localhost" as in the docs.
func (n *Node) RTMPURL(name string) string {
	return fmt.Sprintf("rtmp://localhost:%d/%s", n.RTMPPort, name)
}

// testWriter sends server logs to the test log, and stops after the test.
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

// Write logs p, a line of the server's log, unless the test has ended.
func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// WaitLive waits until the stream has a publisher and a video track.
func WaitLive(t *testing.T, n *Node, name string) *stream.Stream {
	t.Helper()
	var s *stream.Stream
	testutil.WaitFor(t, 30*time.Second, name+" to go live", func() bool {
		s = n.Hub.Get(streamname.Name(name))
		if s == nil {
			return false
		}
		in := s.Info()
		return in.Live && in.Video != nil && in.Audio != nil
	})
	return s
}

// WaitLiveHTTP waits until the API reports the stream live with video and audio.
func WaitLiveHTTP(t *testing.T, httpURL, name string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, name+" to go live", func() bool {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(httpURL + "/api/v1/streams/" + name)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var s struct {
			Live  bool            `json:"live"`
			Video json.RawMessage `json:"video"`
			Audio json.RawMessage `json:"audio"`
		}
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&s) == nil && s.Live && s.Video != nil && s.Audio != nil
	})
}
