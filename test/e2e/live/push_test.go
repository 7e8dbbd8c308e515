//go:build unix

package live

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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

// nginxRTMP is nginx-rtmp on a loopback port, as a push target.
type nginxRTMP struct {
	dir, bin string
	port     int
	cmd      *exec.Cmd
	done     chan struct{}
}

// startNginxRTMP runs nginx with the RTMP module, live on, at port (0: a
// free one), until stop or the test's end.
func startNginxRTMP(t *testing.T, port int) *nginxRTMP {
	t.Helper()
	const module = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(module); err != nil {
		testutil.Need(t, "libnginx-mod-rtmp")
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		bin = p
	}
	if port == 0 {
		port = testutil.FreePort(t)
	}
	n := &nginxRTMP{dir: t.TempDir(), bin: bin, port: port}
	os.MkdirAll(filepath.Join(n.dir, "logs"), 0o755)
	conf := fmt.Sprintf(`load_module %s;
worker_processes 1;
daemon off;
master_process off;
pid %s/nginx.pid;
error_log %s/logs/error.log warn;
events { worker_connections 256; }
rtmp { server { listen 127.0.0.1:%d; chunk_size 4096; application live { live on; } } }
`, module, n.dir, n.dir, port)
	if err := os.WriteFile(filepath.Join(n.dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	return n
}

func (n *nginxRTMP) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(n.bin, "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf"))
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	t.Cleanup(n.stop)
	testutil.WaitFor(t, 10*time.Second, "nginx-rtmp to listen", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (n *nginxRTMP) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
}

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
	nginx := startNginxRTMP(t, 0)
	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`push_allow_private: true
apps:
  live:
    push:
      - rtmp://127.0.0.1:%d/live/{stream}
      - rtmp://127.0.0.1:%d/live/{stream}?key=a-secret-key
`, target.RTMPPort, nginx.port)), 0o600)
	src := e2eutil.StartProcess(t, "--config", cfg)
	const name = "live/src"
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", src.RTMPPort, name))
	e2eutil.WaitLiveHTTP(t, src.HTTPURL, name)
	viewer := e2eutil.PlayRTMP(t, src.RTMPAddr, name)
	viewer.WaitFrames(t, 30, 20*time.Second)

	e2eutil.WaitLiveHTTP(t, target.HTTPURL, name)
	e2eutil.ProbeCodecs(t, target.HTTPURL+"/"+name+".flv")
	nginxURL := fmt.Sprintf("rtmp://127.0.0.1:%d/%s", nginx.port, name)
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
	nginx.stop()
	testutil.WaitFor(t, 15*time.Second, "the push to nginx-rtmp to notice", func() bool {
		for _, p := range pushes(t, src.HTTPURL, name) {
			if strings.Contains(fmt.Sprint(p["target"]), fmt.Sprint(nginx.port)) && p["state"] == "waiting" {
				return true
			}
		}
		return false
	})
	nginx.start(t)
	testutil.WaitFor(t, 45*time.Second, "the push to nginx-rtmp to resume", func() bool {
		for _, p := range pushes(t, src.HTTPURL, name) {
			if strings.Contains(fmt.Sprint(p["target"]), fmt.Sprint(nginx.port)) && p["state"] == "pushing" {
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
