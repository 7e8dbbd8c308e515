//go:build unix

package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestEventsViewers: a Socket.IO client of one node gets hello with the
// node's ID, joins a stream's room, and sees the viewers count rise when
// an ffmpeg player connects and fall when it leaves.
func TestEventsViewers(t *testing.T) {
	t.Parallel()
	testutil.Need(t, "node", "ffmpeg")
	e2eutil.NeedNodeModules(t, "socket.io-client")
	n := e2eutil.StartNode(t, func(c *config.Config) { c.NodeID = "events-node-1" })
	const name = "live/stream"
	e2eutil.PublishFFmpeg(t, n.RTMPURL(name))
	e2eutil.WaitLive(t, n, name)

	js := e2eutil.StartJS(t, 90*time.Second, "events.mjs", "viewers", n.HTTPURL, name)
	hello := js.Next(t, "hello", 30*time.Second)
	data, _ := hello["data"].(map[string]any)
	if data["node"] != "events-node-1" || !strings.Contains(fmt.Sprint(data["streams"]), name) || data["version"] == "" {
		t.Errorf("hello = %v, want node events-node-1 and streams with %s", data, name)
	}
	js.Next(t, "joined", 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	player := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-i", fmt.Sprintf("rtmp://127.0.0.1:%d/%s", n.RTMPPort, name), "-t", "5", "-f", "null", "-")
	if out, err := player.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg player: %v\n%s", err, out)
	}
	js.Next(t, "done", 60*time.Second)

	var peak int
	var seenDrop bool
	for _, line := range strings.Split(js.Output(), "\n") {
		var m struct {
			Event string `json:"event"`
			Data  struct {
				Stream  string         `json:"stream"`
				Viewers map[string]int `json:"viewers"`
				Total   int            `json:"total"`
			} `json:"data"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Event != "viewers" {
			continue
		}
		// Every protocol, even at zero.
		if m.Data.Stream != name || len(m.Data.Viewers) != 6 {
			t.Errorf("viewers event %s", line)
		}
		sum := 0
		for _, n := range m.Data.Viewers {
			sum += n
		}
		if m.Data.Total != sum {
			t.Errorf("total is not the sum: %s", line)
		}
		if peak >= 1 && m.Data.Total < peak {
			seenDrop = true
		}
		peak = max(peak, m.Data.Total)
	}
	if peak < 1 || !seenDrop {
		t.Errorf("viewers peaked at %d (drop seen: %v), want 1 or more and then fewer", peak, seenDrop)
	}
}

// TestEventsChatAcrossNodes: two meshcast processes share a real Redis;
// a client on each joins the same room; a message sent on one node
// reaches both clients, and the rate limit and room membership hold.
func TestEventsChatAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "node", "redis-server")
	e2eutil.NeedNodeModules(t, "socket.io-client")
	red := testutil.StartRedis(t, 0)
	const secret = "cluster-secret-of-the-tests"
	flags := func(id string) []string {
		return []string{"--redis", red.URL(), "--cluster-secret", secret, "--node-id", id, "--advertise-host", "127.0.0.1"}
	}
	a := e2eutil.StartProcess(t, flags("chat-a")...)
	b := e2eutil.StartProcess(t, flags("chat-b")...)
	testutil.WaitFor(t, 10*time.Second, "two nodes in the registry", func() bool { return len(e2eutil.NodeIDs(a.HTTPURL)) == 2 })

	js := e2eutil.StartJS(t, 90*time.Second, "events.mjs", "chat", a.HTTPURL, b.HTTPURL, "live/stream")
	res := js.Next(t, "chat", 80*time.Second)
	var out struct {
		Text string `json:"text"`
		Sent int    `json:"sent"`
		A, B struct {
			ID    string `json:"id"`
			Hello struct {
				Node string `json:"node"`
			} `json:"hello"`
			Got []struct {
				Stream, Text, From, Time string
			} `json:"got"`
			Errors []struct {
				Code string `json:"code"`
			} `json:"errors"`
		}
	}
	raw, _ := json.Marshal(res)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	if out.A.Hello.Node != "chat-a" || out.B.Hello.Node != "chat-b" {
		t.Errorf("hello nodes %q and %q, want chat-a and chat-b", out.A.Hello.Node, out.B.Hello.Node)
	}
	received := func(who string, got []struct{ Stream, Text, From, Time string }) {
		t.Helper()
		n := 0
		for _, m := range got {
			if m.Text == out.Text {
				n++
				if m.From != out.A.ID || m.Stream != "live/stream" {
					t.Errorf("%s got %+v, want from %s in live/stream", who, m, out.A.ID)
				}
				if _, err := time.Parse(time.RFC3339, m.Time); err != nil {
					t.Errorf("%s: time %q: %v", who, m.Time, err)
				}
			}
		}
		if n == 0 || n > out.Sent {
			t.Errorf("%s got the message %d times (sent %d): %+v", who, n, out.Sent, got)
		}
	}
	received("the client on node B", out.B.Got)
	received("the sender", out.A.Got)
	if len(out.A.Got) > 5 || len(out.B.Got) > 5 {
		t.Errorf("more than 5 messages delivered from one socket in 10 s: A %d, B %d", len(out.A.Got), len(out.B.Got))
	}
	limited := false
	for _, e := range out.A.Errors {
		limited = limited || e.Code == "rate_limited"
	}
	if !limited {
		t.Errorf("the burst was not rate limited: errors %+v", out.A.Errors)
	}
	if len(out.B.Errors) != 1 || out.B.Errors[0].Code != "not_member" {
		t.Errorf("chat outside the room: errors %+v, want not_member", out.B.Errors)
	}
}

// TestEventsBrowserDemo: headless Chromium opens /events-demo, which
// loads /socket.io/socket.io.js from node_modules and logs hello.
func TestEventsBrowserDemo(t *testing.T) {
	testutil.Need(t, "node", "chromium")
	e2eutil.NeedNodeModules(t, "socket.io-client", "playwright-core")
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.NodeID = "browser-node"
		c.WebModules = filepath.Join(e2eutil.RepoRoot(t), "node_modules")
	})
	js := e2eutil.StartJS(t, 90*time.Second, "browser.mjs", n.HTTPURL+"/events-demo")
	var res map[string]any
	select {
	case m, ok := <-js.Lines:
		if !ok {
			t.Fatalf("browser.mjs printed nothing")
		}
		res = m
	case <-time.After(80 * time.Second):
		t.Fatal("browser.mjs timed out")
	}
	msg, _ := res["console"].(string)
	if !strings.HasPrefix(msg, "hello ") || !strings.Contains(msg, `"node":"browser-node"`) {
		t.Fatalf("console message %q (result %v), want hello with the node ID", msg, res)
	}
	var hello struct {
		Node    string   `json:"node"`
		Streams []string `json:"streams"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(msg, "hello ")), &hello); err != nil || hello.Node != "browser-node" || hello.Streams == nil {
		t.Errorf("hello %q: %+v %v", msg, hello, err)
	}
	if ds, _ := res["dataset"].(string); ds != strings.TrimPrefix(msg, "hello ") {
		t.Errorf("body data-hello %q, want %q", ds, strings.TrimPrefix(msg, "hello "))
	}
}

// TestSocketIOClientFile: the client library is served from --web-modules
// and, without it, a 404 says to run npm ci.
func TestSocketIOClientFile(t *testing.T) {
	t.Parallel()
	e2eutil.NeedNodeModules(t, "socket.io-client")
	modules := filepath.Join(e2eutil.RepoRoot(t), "node_modules")
	n := e2eutil.StartNode(t, func(c *config.Config) { c.WebModules = modules })
	want, err := os.ReadFile(filepath.Join(modules, "socket.io-client", "dist", "socket.io.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"socket.io.js", "socket.io.min.js"} {
		code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/socket.io/"+file)
		if code != 200 || !bytes.Contains(body, []byte("Socket.IO")) {
			t.Errorf("GET /socket.io/%s: %d, %d bytes", file, code, len(body))
		}
		if file == "socket.io.min.js" && !bytes.Equal(body, want) {
			t.Errorf("GET /socket.io/%s differs from node_modules' copy", file)
		}
	}

	bare := e2eutil.StartNode(t, func(c *config.Config) { c.WebModules = filepath.Join(t.TempDir(), "node_modules") })
	code, body := e2eutil.HTTPGet(t, bare.HTTPURL+"/socket.io/socket.io.js")
	if code != 404 || !strings.Contains(string(body), "npm ci") {
		t.Errorf("without node_modules: %d %q, want 404 saying to run npm ci", code, body)
	}
	code, body = e2eutil.HTTPGet(t, bare.HTTPURL+"/events-demo")
	if code != 200 || !strings.Contains(string(body), `<script src="/socket.io/socket.io.js"></script>`) {
		t.Errorf("GET /events-demo: %d %q", code, body)
	}
}
