//go:build unix

package ops

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

func TestDashboard(t *testing.T) {
	e2eutil.NeedDashboard(t)
	nginx := e2eutil.StartNginxRTMP(t, 0) // where the stream is restreamed to
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.NodeID = "dash-node"
		c.WebModules = filepath.Join(e2eutil.RepoRoot(t), "node_modules")
		c.PushAllowPrivate = true
		c.Apps = map[string]config.AppConfig{"live": {Push: []string{fmt.Sprintf("rtmp://127.0.0.1:%d/live/{stream}?key=restream-key", nginx.Port)}}}
	})
	const name = "live/dash"
	whole := t // the publisher outlives the subtests

	t.Run("the stream appears without a reload", func(t *testing.T) {
		res := e2eutil.Dashboard(t, func() { e2eutil.PublishFFmpegLoop(whole, n.RTMPURL(name)) }, "streams", n.HTTPURL, name, "pushing")
		f, _ := res["fields"].(map[string]any)
		if res["sameDocument"] != true {
			t.Error("the page reloaded")
		}
		if !strings.Contains(fmt.Sprint(f["codecs"]), "h264") || !strings.Contains(fmt.Sprint(f["codecs"]), "aac") ||
			!strings.HasPrefix(fmt.Sprint(f["resolution"]), "640×360") || f["owner"] != "dash-node" ||
			!strings.HasSuffix(fmt.Sprint(f["bitrate"]), "b/s") || f["uptime"] == "—" {
			t.Errorf("stream card %v: want h264 and aac, 640×360, a bitrate, an uptime, owner dash-node", f)
		}
		if p := fmt.Sprint(f["pushes"]); !strings.Contains(p, fmt.Sprintf("rtmp://127.0.0.1:%d/live/xxx?key=xxx pushing", nginx.Port)) || strings.Contains(p, "restream-key") {
			t.Errorf("the card's restreams: %q, want the nginx-rtmp target redacted and pushing", p)
		}
		if w, _ := res["thumbWidth"].(float64); w != 320 {
			t.Errorf("the card's thumbnail is %v pixels wide, want the stream's snapshot at 320", res["thumbWidth"])
		}
	})
	for _, proto := range []string{"hls", "flv", "wsflv", "webrtc"} {
		t.Run(proto+" plays in the player page", func(t *testing.T) {
			res := e2eutil.Dashboard(t, nil, "play", n.HTTPURL, name, proto)
			ct, _ := res["currentTime"].(float64)
			frames, _ := res["totalVideoFrames"].(float64)
			stats, _ := res["stats"].(map[string]any)
			t.Logf("%s: currentTime %.2f s, %v frames, stats %v", proto, ct, frames, stats)
			if ct <= 2 || frames <= 30 || res["width"] != 640.0 {
				t.Errorf("%s: currentTime %.2f, %v frames, width %v; want > 2 s, > 30 frames, 640", proto, ct, frames, res["width"])
			}
			if stats["buffer"] == "—" || stats["latency"] == "—" || stats["dropped"] == "—" {
				t.Errorf("%s: player stats %v lack buffer, latency or dropped frames", proto, stats)
			}
			if proto == "webrtc" {
				// The stream's AAC reaches the browser as Opus, decoded to sound.
				audio, _ := res["audio"].(map[string]any)
				pkts, _ := audio["packetsReceived"].(float64)
				energy, _ := audio["totalAudioEnergy"].(float64)
				t.Logf("webrtc: inbound audio %v", audio)
				if pkts <= 50 || energy <= 0 || audio["codec"] != "audio/opus" {
					t.Errorf("webrtc: inbound audio %v; want more than 50 Opus packets, decoded to sound", audio)
				}
			}
		})
	}
	t.Run("two pages chat", func(t *testing.T) {
		res := e2eutil.Dashboard(t, nil, "chat", n.HTTPURL, name)
		if res["sent"] == nil || res["replied"] == nil {
			t.Errorf("chat result %v", res)
		}
	})
	t.Run("every page fits 360 px", func(t *testing.T) {
		res := e2eutil.Dashboard(t, nil, "mobile", n.HTTPURL, name)
		widths, _ := res["widths"].(map[string]any)
		for page, w := range widths {
			if w.(float64) > 360 {
				t.Errorf("%s page is %v px wide at a 360 px viewport", page, w)
			}
		}
		if len(widths) != 4 {
			t.Errorf("widths %v, want 4 pages", widths)
		}
	})
	t.Run("assets", func(t *testing.T) {
		for path, want := range map[string]int{"/": 200, "/watch/live/dash": 200, "/cluster": 200, "/publish": 200, "/ui/main.js": 200, "/ui/main.css": 200, "/ui/index.html": 404, "/ui/.gitkeep": 404, "/ui/nope.js": 404} {
			if code, _ := e2eutil.HTTPGet(t, n.HTTPURL+path); code != want {
				t.Errorf("GET %s: %d, want %d", path, code, want)
			}
		}
	})
}

// TestDashboardCluster: the cluster page of a two-node cluster shows both
// nodes and the relay of a stream published on one and watched on the
// other.
func TestDashboardCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	e2eutil.NeedDashboard(t)
	nodes := e2eutil.StartClusterNodes(t, nil, "dash-a", "dash-b")
	a, b := nodes[0], nodes[1]
	const name = "live/tree"
	e2eutil.PublishFFmpegLoop(t, a.RTMPURL(name))
	testutil.WaitFor(t, 20*time.Second, "the stream on A", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(a.HTTPURL + "/api/v1/streams/" + name)
		return code == 200
	})
	// A viewer on B makes B relay the stream from A.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", b.HTTPURL+"/"+name+".flv", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	res := e2eutil.Dashboard(t, nil, "cluster", a.HTTPURL, name, "dash-a", "dash-b")
	tree := fmt.Sprint(res["tree"])
	if !strings.Contains(tree, "dash-a") || !strings.Contains(tree, "dash-b pulls from dash-a") {
		t.Errorf("tree %q: want dash-a owning and dash-b pulling from it", tree)
	}
	t.Logf("nodes %v; tree %q", res["nodes"], tree)

	// B's stream list shows the whole cluster: a stream published on A
	// that nobody watches on B (so B does not relay it), owner and codecs
	// from A's record in the registry.
	const other = "live/only-on-a"
	res = e2eutil.Dashboard(t, func() { e2eutil.PublishFFmpegLoop(t, a.RTMPURL(other)) }, "streams", b.HTTPURL, other)
	fields, _ := res["fields"].(map[string]any)
	if fields["owner"] != "dash-a" || !strings.Contains(fmt.Sprint(fields["codecs"]), "h264") {
		t.Errorf("B's card of %s: %v; want owner dash-a and h264", other, fields)
	}
	if b.Hub.Get(other) != nil {
		t.Errorf("B relays %s: the card would not prove the cluster listing", other)
	}
}
