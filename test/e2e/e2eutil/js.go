//go:build unix

package e2eutil

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/internal/web"
)

// NeedDashboard skips a test when this binary was built without the
// dashboard outside CI, and fails it in CI, where the test command builds
// it (npm run build) before the tests.
func NeedDashboard(t *testing.T) {
	t.Helper()
	testutil.Need(t, "node", "chromium", "ffmpeg")
	NeedNodeModules(t, "playwright-core", "hls.js", "mpegts.js", "socket.io-client")
	if !web.Built() {
		if os.Getenv("CI") != "" {
			t.Fatal("the dashboard is not built: the test command must run npm run build before go test")
		}
		t.Skip("the dashboard is not built: run npm ci && npm run build")
	}
}

// Dashboard runs test/js/dashboard.mjs in MODE and returns its result; it
// calls then, if set, once the page is up.
func Dashboard(t *testing.T, then func(), args ...string) map[string]any {
	t.Helper()
	js := StartJS(t, 150*time.Second, "dashboard.mjs", args...)
	js.Next(t, "ready", 90*time.Second)
	if then != nil {
		then()
	}
	res := js.Next(t, "result", 120*time.Second)
	if ext, _ := res["external"].([]any); len(ext) > 0 {
		t.Errorf("the page made requests outside the node: %v", ext)
	}
	if errs, _ := res["errors"].([]any); len(errs) > 0 {
		t.Errorf("the page threw: %v", errs)
	}
	return res
}

// NeedNodeModules skips a test whose npm packages are not installed
// outside CI, and fails it in CI, where the test command installs them
// (npm ci, from scripts/install-test-deps.sh).
func NeedNodeModules(t *testing.T, pkgs ...string) {
	t.Helper()
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(RepoRoot(t), "node_modules", pkg, "package.json")); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("npm package %s not installed: the test command must run npm ci (scripts/install-test-deps.sh)", pkg)
			}
			t.Skipf("npm package %s not installed: run npm ci", pkg)
		}
	}
}

// JSScript is a Node.js script of test/js running in the repository's
// root, printing one JSON object per line.
type JSScript struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	Lines  chan map[string]any // the lines printed, parsed; closed when the script ends
	stderr *testutil.LockedBuffer
	done   chan error
	mu     sync.Mutex
	all    []string
}

// StartJS runs node test/js/NAME ARGS... for at most timeout.
func StartJS(t *testing.T, timeout time.Duration, name string, args ...string) *JSScript {
	t.Helper()
	testutil.Need(t, "node")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	s := &JSScript{cancel: cancel, Lines: make(chan map[string]any, 1000), stderr: &testutil.LockedBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.CommandContext(ctx, "node", append([]string{filepath.Join("test", "js", name)}, args...)...)
	s.cmd.Dir = RepoRoot(t)
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
				case s.Lines <- m:
				default: // bounded: the test reads what it needs
				}
			}
		}
		close(s.Lines)
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
		if t.Failed() {
			t.Logf("node %s output:\n%s\nstderr:\n%s", name, s.Output(), s.stderr.String())
		}
	})
	return s
}

// Output returns everything the script has printed so far.
func (s *JSScript) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.all, "\n")
}

// Next returns the next line whose "event" is ev, skipping others.
func (s *JSScript) Next(t *testing.T, ev string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-s.Lines:
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
