//go:build unix

package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// SIGHUP re-reads the configuration file and the secret files: a new
// publish key admits, the old one is refused to new publishers while the
// stream it admitted plays on; a file that fails validation changes
// nothing; POST /api/v1/reload does the same (here, new CORS origins) and
// says what applied and what needs a restart.
func TestReload(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	dir := t.TempDir()
	file := filepath.Join(dir, "meshcast.yaml")
	keys := filepath.Join(dir, "keys")
	const token = "an-admin-token-of-the-reload-test"
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(keys, "live=the-first-key-0001\n")
	write(file, "publish_auth: always\npublish_keys_file: "+keys+"\nadmin_token: "+token+"\nlog_level: info\n")
	p := e2eutil.StartProcess(t, "--config", file)

	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/live/on?key=the-first-key-0001", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/on")
	viewer := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/on")
	viewer.WaitFrames(t, 30, 20*time.Second)

	reloads := func() int { return strings.Count(p.Stderr.String(), "configuration reloaded") }
	refusals := func() int { return strings.Count(p.Stderr.String(), "reload refused") }
	hup := func(what string, done func() bool) {
		t.Helper()
		if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, what, done)
	}
	refused := func(name string) bool {
		err := e2eutil.TryPublish(t, p.RTMPAddr, "", name)
		return errors.Is(err, rtmp.ErrRefused)
	}

	// The key file changes; SIGHUP applies it.
	write(keys, "live=the-second-key-002\n")
	hup("the reload", func() bool { return reloads() == 1 })
	if err := e2eutil.TryPublish(t, p.RTMPAddr, "", "live/new?key=the-second-key-002"); err != nil {
		t.Errorf("publish with the new key after the reload: %v", err)
	}
	if !refused("live/old?key=the-first-key-0001") {
		t.Error("the old key still admits new publishers after the reload")
	}
	viewer.WaitFrames(t, 60, 10*time.Second) // the live stream went on
	if err := viewer.Err.Load(); err != nil {
		t.Errorf("the viewer of the stream admitted with the old key: %v", err)
	}

	// A file that fails validation changes nothing.
	write(file, "publish_auth: sometimes\npublish_keys_file: "+keys+"\nadmin_token: "+token+"\n")
	hup("the refusal", func() bool { return refusals() == 1 })
	if reloads() != 1 {
		t.Error("an invalid file was applied")
	}
	if err := e2eutil.TryPublish(t, p.RTMPAddr, "", "live/after-bad?key=the-second-key-002"); err != nil {
		t.Errorf("publish with the key in force after a refused reload: %v", err)
	}

	// POST /api/v1/reload: the admin token, then what applied and what
	// needs a restart.
	write(file, "publish_auth: always\npublish_keys_file: "+keys+"\nadmin_token: "+token+"\ncors_origins: [https://player.example]\nmax_viewers_per_ip: 2\nmax_lag: 3s\n")
	post := func(auth string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodPost, p.HTTPURL+"/api/v1/reload", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, b
	}
	if code, _ := post(""); code != http.StatusUnauthorized {
		t.Errorf("POST /api/v1/reload without the token: %d, want 401", code)
	}
	code, body := post(token)
	var res struct {
		Applied       []string `json:"applied"`
		RestartNeeded []string `json:"restart_needed"`
	}
	if code != 200 || json.Unmarshal(body, &res) != nil || !slices.Contains(res.Applied, "--cors-origins") ||
		!slices.Contains(res.Applied, "--max-viewers-per-ip") || !slices.Contains(res.RestartNeeded, "--max-lag") {
		t.Errorf("POST /api/v1/reload: %d %q; want --cors-origins and --max-viewers-per-ip applied, --max-lag needing a restart", code, body)
	}
	// The new per-address limit holds the sessions already there: this
	// address has a publisher and a viewer, so a new publisher is refused.
	if err := e2eutil.TryPublish(t, p.RTMPAddr, "", "live/third?key=the-second-key-002"); !errors.Is(err, rtmp.ErrRefused) {
		t.Errorf("a third session from one address under --max-viewers-per-ip 2: %v, want a refusal", err)
	}
	// The new CORS policy is in force.
	req, _ := http.NewRequest(http.MethodGet, p.HTTPURL+"/api/v1/streams", nil)
	req.Header.Set("Origin", "https://player.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://player.example" {
		t.Errorf("after the reload, a page of https://player.example gets Access-Control-Allow-Origin %q", got)
	}
	write(file, "publish_auth: nobody\n")
	if code, body := post(token); code != http.StatusUnprocessableEntity {
		t.Errorf("POST /api/v1/reload with an invalid file: %d %s, want 422", code, body)
	}
}
