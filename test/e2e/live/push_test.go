//go:build unix

package live

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// pushes is a stream's GET /api/v1/streams/APP/STREAM/pushes.
func pushes(t *testing.T, base, name string) []map[string]any {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, base+"/api/v1/streams/"+name+"/pushes")
	var out struct {
		Pushes []map[string]any `json:"pushes"`
	}
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("GET pushes: %d %s", code, body)
	}
	return out.Pushes
}

// TestPush: a stream restreamed to nginx-rtmp and to another meshcast at
// once, as configured; both serve h264 and aac. nginx-rtmp stopped and
// started again: the push resumes by itself, and the source's viewers
// never stall. A push added through the API starts at once and goes when
// deleted; targets never show their stream keys.
func TestPush(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	target := e2eutil.StartProcess(t)
	nginx := e2eutil.StartNginxRTMP(t, 0)
	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`push_allow_private: true
apps:
  live:
    push:
      - rtmp://127.0.0.1:%d/live/{stream}
      - rtmp://127.0.0.1:%d/live/{stream}?key=a-secret-key
`, target.RTMPPort, nginx.Port)), 0o600)
	src := e2eutil.StartProcess(t, "--config", cfg)
	const name = "live/src"
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", src.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, src.HTTPURL, name)
	viewer := e2eutil.PlayRTMP(t, src.RTMPAddr, name)
	viewer.WaitFrames(t, 30, 20*time.Second)

	e2eutil.WaitLiveHTTP(t, target.HTTPURL, name)
	e2eutil.ProbeCodecs(t, target.HTTPURL+"/"+name+".flv")
	nginxURL := fmt.Sprintf("rtmp://127.0.0.1:%d/%s", nginx.Port, name)
	e2eutil.ProbeCodecs(t, nginxURL)
	list := pushes(t, src.HTTPURL, name)
	if len(list) != 2 {
		t.Fatalf("pushes %v, want 2", list)
	}
	for _, p := range list {
		if p["state"] != "pushing" || strings.Contains(fmt.Sprint(p["target"]), "src") || strings.Contains(fmt.Sprint(p["target"]), "a-secret-key") {
			t.Errorf("push %v: want pushing, its target redacted", p)
		}
	}

	// nginx-rtmp goes away and comes back: the push resumes by itself.
	viewer.Gaps.Reset()
	nginx.Stop()
	testutil.WaitFor(t, 15*time.Second, "the push to nginx-rtmp to notice", func() bool {
		for _, p := range pushes(t, src.HTTPURL, name) {
			if strings.Contains(fmt.Sprint(p["target"]), fmt.Sprint(nginx.Port)) && p["state"] == "waiting" {
				return true
			}
		}
		return false
	})
	nginx.Start(t)
	testutil.WaitFor(t, 45*time.Second, "the push to nginx-rtmp to resume", func() bool {
		for _, p := range pushes(t, src.HTTPURL, name) {
			if strings.Contains(fmt.Sprint(p["target"]), fmt.Sprint(nginx.Port)) && p["state"] == "pushing" {
				return true
			}
		}
		return false
	})
	e2eutil.ProbeCodecs(t, nginxURL)
	if g := viewer.Gaps.Max(); g > time.Second {
		t.Errorf("the source's viewer stalled %v while nginx-rtmp was away", g)
	}

	// A push added through the API.
	body := fmt.Sprintf(`{"url": "rtmp://127.0.0.1:%d/live/second"}`, target.RTMPPort)
	resp, err := http.Post(src.HTTPURL+"/api/v1/streams/"+name+"/pushes", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var added struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&added)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || added.ID == "" {
		t.Fatalf("POST pushes: %s", resp.Status)
	}
	e2eutil.WaitLiveHTTP(t, target.HTTPURL, "live/second")
	req, _ := http.NewRequest(http.MethodDelete, src.HTTPURL+"/api/v1/streams/"+name+"/pushes/"+added.ID, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE push: %s", resp.Status)
	}
	if n := len(pushes(t, src.HTTPURL, name)); n != 2 {
		t.Errorf("%d pushes after the DELETE, want the 2 configured", n)
	}
	// A bad target is refused with a reason.
	resp, err = http.Post(src.HTTPURL+"/api/v1/streams/"+name+"/pushes", "application/json", strings.NewReader(`{"url": "http://example.com/x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST a push to http://: %s, want 400", resp.Status)
	}
}

// TestPushSRT: a push added through the API to another meshcast's SRT
// ingest, as a caller sending MPEG-TS: the target serves h264 and aac,
// and the push's listing shows it pushing, with bytes sent, and never its
// stream ID.
func TestPushSRT(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	target := e2eutil.StartProcess(t)
	src := e2eutil.StartProcess(t, "--push-allow-private")
	const name = "live/src"
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", src.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, src.HTTPURL, name)

	const streamID = "publish:live/dst"
	body, _ := json.Marshal(map[string]string{"url": fmt.Sprintf("srt://127.0.0.1:%d?streamid=%s&latency=200", target.SRTPort(t), streamID)})
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(src.HTTPURL+"/api/v1/streams/"+name+"/pushes", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST pushes: %s", resp.Status)
	}
	e2eutil.WaitLiveHTTP(t, target.HTTPURL, "live/dst")
	e2eutil.ProbeCodecs(t, target.HTTPURL+"/live/dst.flv")

	testutil.WaitFor(t, 10*time.Second, "the SRT push to be listed pushing with bytes sent", func() bool {
		list := pushes(t, src.HTTPURL, name)
		if len(list) != 1 {
			t.Fatalf("pushes %v, want 1", list)
		}
		sent, _ := list[0]["bytes_sent"].(float64)
		return list[0]["state"] == "pushing" && sent > 0
	})
	_, raw := e2eutil.HTTPGet(t, src.HTTPURL+"/api/v1/streams/"+name+"/pushes")
	if strings.Contains(string(raw), "live/dst") || !strings.Contains(string(raw), "srt://127.0.0.1:") {
		t.Errorf("GET pushes shows the stream ID, or not the target: %s", raw)
	}
	if strings.Contains(src.Stderr.String(), "live/dst") {
		t.Errorf("the stream ID is in the source's log")
	}
}
