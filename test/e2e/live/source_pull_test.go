//go:build unix

package live

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// sourceStatus is an entry of GET /api/v1/sources.
type sourceStatus struct {
	Stream        string `json:"stream"`
	URL           string `json:"url"`
	Mode          string `json:"mode"`
	State         string `json:"state"`
	Node          string `json:"node"`
	BytesReceived uint64 `json:"bytes_received"`
	Restarts      int    `json:"restarts"`
	LastError     string `json:"last_error"`
}

// sources returns GET /api/v1/sources by stream, and the raw body.
func sources(t *testing.T, httpURL string) (map[string]sourceStatus, string) {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, httpURL+"/api/v1/sources")
	var doc struct{ Sources []sourceStatus }
	if err := json.Unmarshal(body, &doc); code != 200 || err != nil {
		t.Fatalf("GET /api/v1/sources: %d %s %v", code, body, err)
	}
	out := map[string]sourceStatus{}
	for _, s := range doc.Sources {
		out[s.Stream] = s
	}
	return out, string(body)
}

// srtAddr is the SRT listener's address, from p's log.
func srtAddr(t *testing.T, p *e2eutil.Proc) string {
	t.Helper()
	var addr string
	testutil.WaitFor(t, 10*time.Second, "the SRT listener in the log", func() bool {
		for line := range strings.SplitSeq(p.Stderr.String(), "\n") {
			if strings.Contains(line, "srt listening") {
				if _, rest, ok := strings.Cut(line, "addr="); ok {
					addr = strings.Fields(rest)[0]
					return true
				}
			}
		}
		return false
	})
	return addr
}

// TestSourcesHLSAndSRT: another meshcast's HLS playlist and SRT output as
// on-demand sources, played over HTTP-FLV and HLS; the sources' status API shows
// their states and never their credentials, nor does the log.
func TestSourcesHLSAndSRT(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	other := e2eutil.StartProcess(t)
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/live/cam2", other.RTMPPort))
	e2eutil.WaitLiveHTTP(t, other.HTTPURL, "live/cam2")

	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`sources:
  live/fromhls: {url: "%s/live/cam2/index.m3u8"}
  live/fromsrt: {url: "srt://%s?streamid=read:live/cam2"}
  live/locked: {url: "rtmp://user:password@127.0.0.1:1/live/x?key=secret"}
`, other.HTTPURL, srtAddr(t, other))), 0o600)
	p := e2eutil.StartProcess(t, "--config", cfg, "--relay-idle", "2s", "--hls-idle-timeout", "2s", "--publisher-grace", "1s")

	st, _ := sources(t, p.HTTPURL)
	for _, name := range []string{"live/fromhls", "live/fromsrt", "live/locked"} {
		if s := st[name]; s.State != "idle" || s.Mode != "on-demand" || s.Node != "" {
			t.Errorf("%s before its first viewer: %+v, want idle", name, s)
		}
	}
	for _, name := range []string{"live/fromhls", "live/fromsrt"} {
		e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+".flv")
		e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+"/index.m3u8")
		if s, _ := sources(t, p.HTTPURL); s[name].State != "pulling" || s[name].Node == "" || s[name].BytesReceived == 0 {
			t.Errorf("%s while played: %+v, want pulling here with bytes", name, s[name])
		}
	}

	// A source that fails: its state and error, without its credentials.
	e2eutil.HTTPGetQuiet(p.HTTPURL + "/live/locked.flv")
	var body string
	testutil.WaitFor(t, 20*time.Second, "the failing source's error", func() bool {
		st, body = sources(t, p.HTTPURL)
		return st["live/locked"].LastError != ""
	})
	if s := st["live/locked"]; s.URL != "rtmp://127.0.0.1:1/live/x?key=xxx" || (s.State != "waiting" && s.State != "connecting" && s.State != "idle") {
		t.Errorf("the failing source: %+v", s)
	}
	for _, secret := range []string{"password", "secret"} {
		if strings.Contains(body, secret) {
			t.Errorf("GET /api/v1/sources shows %q: %s", secret, body)
		}
		if log := p.Stderr.String(); strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}

	testutil.WaitFor(t, 30*time.Second, "the sources to stop without viewers", func() bool {
		st, _ := sources(t, p.HTTPURL)
		return st["live/fromhls"].State == "idle" && st["live/fromsrt"].State == "idle"
	})
}

// gstPython returns a Python with GStreamer's RTSP server bindings: the
// system's, which apt installs them for, or the first on PATH.
func gstPython(t *testing.T) string {
	t.Helper()
	const probe = `import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer`
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", probe).Run() == nil {
			return py
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no python3 with gst-rtsp-server's bindings: the test command must install them (scripts/install-test-deps.sh)")
	}
	t.Skip("no python3 with gst-rtsp-server's bindings: run scripts/install-test-deps.sh")
	return ""
}

// startRTSPCamera runs testdata/rtsp_server.py, gst-rtsp-server serving
// H.264 and AAC, until the test ends; it returns the camera's URL.
func startRTSPCamera(t *testing.T) string {
	t.Helper()
	py := gstPython(t)
	testutil.Need(t, "gst-inspect-1.0")
	port := testutil.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, py, filepath.Join("testdata", "rtsp_server.py"), fmt.Sprint(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var stderr testutil.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("rtsp_server.py exited: %s", stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("rtsp_server.py not ready within 20 s: %s", stderr.String())
	}
	return fmt.Sprintf("rtsp://127.0.0.1:%d/cam", port)
}

// TestSourcesGStreamerRTSP: a camera served by GStreamer's
// gst-rtsp-server, pulled over RTSP with interleaved TCP and with UDP,
// plays over HTTP-FLV and HLS as H.264 and AAC, and stops after the idle
// time.
func TestSourcesGStreamerRTSP(t *testing.T) {
	testutil.Need(t, "ffprobe")
	cam := startRTSPCamera(t)
	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`sources:
  live/gstcam: {url: "%s"}
  live/gstcamudp: {url: "%s", rtsp_transport: udp}
`, cam, cam)), 0o600)
	p := e2eutil.StartProcess(t, "--config", cfg, "--relay-idle", "2s", "--hls-idle-timeout", "2s", "--publisher-grace", "1s")
	for _, name := range []string{"live/gstcam", "live/gstcamudp"} {
		t.Run(name, func(t *testing.T) {
			e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+".flv")
			e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+"/index.m3u8")
			if st, _ := sources(t, p.HTTPURL); st[name].State != "pulling" || st[name].BytesReceived == 0 {
				t.Errorf("while played: %+v, want pulling with bytes", st[name])
			}
			testutil.WaitFor(t, 20*time.Second, "the source to stop without viewers", func() bool {
				code, _ := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/streams/"+name)
				return code == 404
			})
			if st, _ := sources(t, p.HTTPURL); st[name].State != "idle" || st[name].Node != "" {
				t.Errorf("after the idle time: %+v, want idle", st[name])
			}
		})
	}
}
