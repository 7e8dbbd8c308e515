//go:build unix

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
)

// repoRoot is the repository's root, where package.json and node_modules
// are.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// needNodeModules skips a test whose npm packages are not installed
// outside CI, and fails it in CI, where the test command installs them
// (npm ci, from scripts/install-test-deps.sh).
func needNodeModules(t *testing.T, pkgs ...string) {
	t.Helper()
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(repoRoot(t), "node_modules", pkg, "package.json")); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("npm package %s not installed: the test command must run npm ci (scripts/install-test-deps.sh)", pkg)
			}
			t.Skipf("npm package %s not installed: run npm ci", pkg)
		}
	}
}

// jsScript is a Node.js script of test/js running in the repository's
// root, printing one JSON object per line.
type jsScript struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	lines  chan map[string]any
	stderr *testutil.LockedBuffer
	done   chan error
	mu     sync.Mutex
	all    []string
}

// startJS runs node test/js/NAME ARGS... for at most timeout.
func startJS(t *testing.T, timeout time.Duration, name string, args ...string) *jsScript {
	t.Helper()
	testutil.Need(t, "node")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	s := &jsScript{cancel: cancel, lines: make(chan map[string]any, 1000), stderr: &testutil.LockedBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.CommandContext(ctx, "node", append([]string{filepath.Join("test", "js", name)}, args...)...)
	s.cmd.Dir = repoRoot(t)
	s.cmd.Stderr = s.stderr
	s.cmd.WaitDelay = 5 * time.Second
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.all = append(s.all, sc.Text())
			s.mu.Unlock()
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case s.lines <- m:
				default: // bounded: the test reads what it needs
				}
			}
		}
		close(s.lines)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
		if t.Failed() {
			t.Logf("node %s output:\n%s\nstderr:\n%s", name, s.output(), s.stderr.String())
		}
	})
	return s
}

func (s *jsScript) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.all, "\n")
}

// next returns the next line whose "event" is ev, skipping others.
func (s *jsScript) next(t *testing.T, ev string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-s.lines:
			if !ok {
				t.Fatalf("node exited before printing %q", ev)
			}
			if m["event"] == "fail" {
				t.Fatalf("node: %v", m["why"])
			}
			if m["event"] == ev {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from node within %v", ev, timeout)
		}
	}
}

// TestEventsViewers: a Socket.IO client of one node gets hello with the
// node's ID, joins a stream's room, and sees the viewers count rise when
// an ffmpeg player connects and fall when it leaves.
func TestEventsViewers(t *testing.T) {
	testutil.Need(t, "node", "ffmpeg")
	needNodeModules(t, "socket.io-client")
	n := startNode(t, func(c *config.Config) { c.NodeID = "events-node-1" })
	const name = "live/stream"
	publishFFmpeg(t, n.rtmpURL(name))
	waitLive(t, n, name)

	js := startJS(t, 90*time.Second, "events.mjs", "viewers", n.httpURL, name)
	hello := js.next(t, "hello", 30*time.Second)
	data, _ := hello["data"].(map[string]any)
	if data["node"] != "events-node-1" || !strings.Contains(fmt.Sprint(data["streams"]), name) || data["version"] == "" {
		t.Errorf("hello = %v, want node events-node-1 and streams with %s", data, name)
	}
	js.next(t, "joined", 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	player := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-i", fmt.Sprintf("rtmp://127.0.0.1:%d/%s", n.rtmpPort, name), "-t", "5", "-f", "null", "-")
	if out, err := player.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg player: %v\n%s", err, out)
	}
	js.next(t, "done", 60*time.Second)

	var peak int
	var seenDrop bool
	for _, line := range strings.Split(js.output(), "\n") {
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
		if m.Data.Stream != name || len(m.Data.Viewers) != 3 {
			t.Errorf("viewers event %s", line)
		}
		if m.Data.Total != m.Data.Viewers["rtmp"]+m.Data.Viewers["flv"]+m.Data.Viewers["hls"] {
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
	needNodeModules(t, "socket.io-client")
	red := testutil.StartRedis(t, 0)
	const secret = "cluster-secret-of-the-tests"
	flags := func(id string) []string {
		return []string{"--redis", red.URL(), "--cluster-secret", secret, "--node-id", id, "--advertise-host", "127.0.0.1"}
	}
	a := startProcess(t, flags("chat-a")...)
	b := startProcess(t, flags("chat-b")...)
	waitFor(t, 10*time.Second, "two nodes in the registry", func() bool { return len(nodeIDs(a.httpURL)) == 2 })

	js := startJS(t, 90*time.Second, "events.mjs", "chat", a.httpURL, b.httpURL, "live/stream")
	res := js.next(t, "chat", 80*time.Second)
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
	needNodeModules(t, "socket.io-client", "playwright-core")
	n := startNode(t, func(c *config.Config) {
		c.NodeID = "browser-node"
		c.WebModules = filepath.Join(repoRoot(t), "node_modules")
	})
	js := startJS(t, 90*time.Second, "browser.mjs", n.httpURL+"/events-demo")
	var res map[string]any
	select {
	case m, ok := <-js.lines:
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
	needNodeModules(t, "socket.io-client")
	modules := filepath.Join(repoRoot(t), "node_modules")
	n := startNode(t, func(c *config.Config) { c.WebModules = modules })
	want, err := os.ReadFile(filepath.Join(modules, "socket.io-client", "dist", "socket.io.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"socket.io.js", "socket.io.min.js"} {
		code, body := httpGet(t, n.httpURL+"/socket.io/"+file)
		if code != 200 || !bytes.Contains(body, []byte("Socket.IO")) {
			t.Errorf("GET /socket.io/%s: %d, %d bytes", file, code, len(body))
		}
		if file == "socket.io.min.js" && !bytes.Equal(body, want) {
			t.Errorf("GET /socket.io/%s differs from node_modules' copy", file)
		}
	}

	bare := startNode(t, func(c *config.Config) { c.WebModules = filepath.Join(t.TempDir(), "node_modules") })
	code, body := httpGet(t, bare.httpURL+"/socket.io/socket.io.js")
	if code != 404 || !strings.Contains(string(body), "npm ci") {
		t.Errorf("without node_modules: %d %q, want 404 saying to run npm ci", code, body)
	}
	code, body = httpGet(t, bare.httpURL+"/events-demo")
	if code != 200 || !strings.Contains(string(body), `<script src="/socket.io/socket.io.js"></script>`) {
		t.Errorf("GET /events-demo: %d %q", code, body)
	}
}
