package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	out, err := exec.Command(meshcastBinary(t), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "meshcast ") {
		t.Fatalf("meshcast version: %v %q", err, out)
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
	p := startProcess(t, "--config", cfg)
	want := fmt.Sprintf("rtmp://media.example:%d/live/stream", p.rtmpPort)
	waitFor(t, 5e9, "start-up URLs", func() bool { return strings.Contains(p.stdout.String(), want) })
	if out := p.stdout.String(); !strings.Contains(out, "/live/stream.flv") || !strings.Contains(out, "/live/stream.m3u8") {
		t.Errorf("start-up message lacks play URLs:\n%s", out)
	}
	line, _, _ := strings.Cut(p.stderr.String(), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil {
		t.Errorf("log is not JSON as MESHCAST_LOG_FORMAT asked: %q", line)
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	out, err := exec.Command(meshcastBinary(t), "serve", "--log-level", "loud").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--log-level") {
		t.Fatalf("bad flag: %v %q", err, out)
	}
}
