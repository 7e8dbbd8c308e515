//go:build unix

package live

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestSources: streams pulled from sources that do not push — nginx-rtmp
// over RTMP, another meshcast over RTSP and HTTP-FLV. An on-demand source
// starts with its first viewer, plays over HTTP-FLV and HLS (each), and stops
// after the idle time; publishers of its name are refused; an always-on
// source survives its server restarting.
func TestSources(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	nginx := e2eutil.StartNginxRTMP(t, 0)
	nginxStream := fmt.Sprintf("rtmp://127.0.0.1:%d/live/cam", nginx.Port)
	stopCam := e2eutil.PublishFFmpeg(t, nginxStream)
	other := e2eutil.StartProcess(t)
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/live/cam2", other.RTMPPort))
	e2eutil.WaitLiveHTTP(t, other.HTTPURL, "live/cam2")
	rtspURL := "rtsp://" + rtspAddr(t, other) + "/live/cam2"

	cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`sources:
  live/fromnginx: {url: "%s"}
  live/fromrtsp: {url: "%s"}
  live/fromflv: {url: "%s/live/cam2.flv"}
  live/always: {url: "%s", mode: always}
`, nginxStream, rtspURL, other.HTTPURL, nginxStream)), 0o600)
	p := e2eutil.StartProcess(t, "--config", cfg, "--relay-idle", "2s", "--hls-idle-timeout", "2s", "--publisher-grace", "1s")

	// The always-on source runs without viewers; the others wait for one.
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/always")
	if code, _ := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/streams/live/fromnginx"); code != 404 {
		t.Errorf("an on-demand source before its first viewer: %d, want 404", code)
	}
	for _, name := range []string{"live/fromnginx", "live/fromrtsp", "live/fromflv"} {
		e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+".flv")
		e2eutil.ProbeCodecs(t, p.HTTPURL+"/"+name+"/index.m3u8")
	}
	if err := e2eutil.TryPublish(t, p.RTMPAddr, "", "live/fromnginx"); !errors.Is(err, rtmp.ErrRefused) {
		t.Errorf("a publisher of a source's name: %v, want a refusal", err)
	}
	testutil.WaitFor(t, 20*time.Second, "the on-demand source to stop without viewers", func() bool {
		code, _ := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/streams/live/fromnginx")
		return code == 404
	})

	// The always-on source's server restarts: the source resumes.
	viewer := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/always")
	viewer.WaitFrames(t, 30, 20*time.Second)
	stopCam()
	nginx.Stop()
	nginx.Start(t)
	e2eutil.PublishFFmpeg(t, nginxStream)
	viewer.WaitFrames(t, 60, 60*time.Second)
	if err := viewer.Err.Load(); err != nil {
		t.Errorf("the always-on source's viewer: %v", err)
	}
}
