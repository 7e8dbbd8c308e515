//go:build unix

package ops

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(e2eutil.MeshcastBinary(t), "version").CombinedOutput()
	if err != nil || string(out) != "meshcast "+e2eutil.BinaryVersion+"\n" {
		t.Fatalf("meshcast version: %v %q, want the version the build stamped", err, out)
	}
}

// TestServeWithConfigFileAndEnv starts "meshcast serve" configured by a YAML
// file and a MESHCAST_* variable, and checks what it prints and logs.
func TestServeWithConfigFileAndEnv(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	if err := os.WriteFile(cfg, []byte("public_host: media.example\nlog_format: text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESHCAST_LOG_FORMAT", "json") // the environment beats the file
	p := e2eutil.StartProcess(t, "--config", cfg)
	want := fmt.Sprintf("rtmp://media.example:%d/live/stream", p.RTMPPort)
	testutil.WaitFor(t, 5e9, "start-up URLs", func() bool { return strings.Contains(p.Stdout.String(), want) })
	out := p.Stdout.String()
	if !strings.HasPrefix(out, "meshcast "+e2eutil.BinaryVersion+" is running.") {
		t.Errorf("start-up message without the build's version:\n%s", out)
	}
	var nodes struct {
		Nodes []struct {
			Version string `json:"version"`
		} `json:"nodes"`
	}
	if _, body := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/nodes"); json.Unmarshal(body, &nodes) != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].Version != e2eutil.BinaryVersion {
		t.Errorf("/api/v1/nodes: %s, want the node with version %s", body, e2eutil.BinaryVersion)
	}
	for _, url := range []string{
		fmt.Sprintf("http://media.example:%d/\n", p.HTTPPort), // the dashboard
		"/live/stream.flv", "/live/stream.m3u8",
		fmt.Sprintf("ws://media.example:%d/live/stream.flv", p.HTTPPort),
		fmt.Sprintf("srt://media.example:%d?streamid=read:live/stream", p.SRTPort(t)),
		fmt.Sprintf("srt://media.example:%d?streamid=publish:live/stream", p.SRTPort(t)),
		fmt.Sprintf("http://media.example:%d/live/stream/whep", p.HTTPPort),
		fmt.Sprintf("http://media.example:%d/live/stream/whip", p.HTTPPort),
		"rtsp://media.example:",
	} {
		if !strings.Contains(out, url) {
			t.Errorf("start-up message lacks %q:\n%s", url, out)
		}
	}
	line, _, _ := strings.Cut(p.Stderr.String(), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil {
		t.Errorf("log is not JSON as MESHCAST_LOG_FORMAT asked: %q", line)
	}
	// Addresses are strings in JSON logs, as in text ones.
	for l := range strings.SplitSeq(p.Stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "srt listening" {
			if addr, ok := rec["addr"].(string); !ok || !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("the SRT listener's address in a JSON log: %v, want \"127.0.0.1:PORT\"", rec["addr"])
			}
		}
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(e2eutil.MeshcastBinary(t), "serve", "--log-level", "loud").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--log-level") {
		t.Fatalf("bad flag: %v %q", err, out)
	}
}

// SIGTERM drains: the node stays up, not ready, while it has a stream;
// a second SIGTERM stops it at once, and it exits 0 either way.
func TestSecondSIGTERMStopsAtOnce(t *testing.T) {
	p := e2eutil.StartProcess(t, "--drain-grace", "60s")
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/live/stream", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/stream")
	p.Cmd.Process.Signal(syscall.SIGTERM)
	testutil.WaitFor(t, 2*time.Second, "/readyz to answer 503", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(p.HTTPURL + "/readyz")
		return code == 503
	})
	if code, _ := e2eutil.HTTPGetQuiet(p.HTTPURL + "/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d, want 200", code)
	}
	time.Sleep(time.Second) // still draining: the stream lives on
	if code, _ := e2eutil.HTTPGetQuiet(p.HTTPURL + "/api/v1/streams/live/stream"); code != 200 {
		t.Fatalf("the stream is gone 1 s into a 60 s drain: %d", code)
	}
	second := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Exit(t, 10*time.Second); err != nil {
		t.Errorf("exit after the second SIGTERM: %v, want 0", err)
	}
	if d := time.Since(second); d > 5*time.Second {
		t.Errorf("stopped %v after the second SIGTERM, want at once", d.Round(time.Millisecond))
	}
}
