//go:build unix

package live

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// publishSRT publishes input.mp4 in a loop over SRT as MPEG-TS, with -c
// copy, until the test ends.
func publishSRT(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", e2eutil.Input(t), "-c", "copy", "-f", "mpegts", url)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestSRTPublish: ffmpeg publishes over SRT; ffprobe reads the stream
// back over HTTP-FLV, HLS and SRT, and an RTMP viewer gets its frames.
func TestSRTPublish(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, nil)
	port := n.SRTAddr().(*net.UDPAddr).Port
	publishSRT(t, fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/srt", port))
	testutil.WaitFor(t, 15*time.Second, "the SRT stream to be live", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(n.HTTPURL + "/api/v1/streams/live/srt")
		return code == 200
	})
	for _, url := range []string{n.HTTPURL + "/live/srt.flv", n.HTTPURL + "/live/srt/index.m3u8"} {
		w, h, err := e2eutil.VideoSize(url)
		if err != nil || w != 640 || h != 360 {
			t.Errorf("%s: %dx%d %v, want 640x360 h264", url, w, h, err)
		}
		e2eutil.ProbeCodecs(t, url)
	}
	// SRT playback, as ffmpeg and players read it.
	read := fmt.Sprintf("srt://127.0.0.1:%d?streamid=read:live/srt", port)
	if w, h, err := e2eutil.VideoSize(read); err != nil || w != 640 || h != 360 {
		t.Errorf("%s: %dx%d %v, want 640x360 h264", read, w, h, err)
	}
	e2eutil.ProbeCodecs(t, read)
	// An SRT viewer is counted like any other, in the API and the metrics.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	viewer := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", read, "-c", "copy", "-f", "null", "-")
	if err := viewer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); viewer.Wait() }()
	testutil.WaitFor(t, 15*time.Second, "the API and the metrics to count the SRT viewer", func() bool {
		var info struct {
			Viewers map[string]int `json:"viewers"`
		}
		_, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/live/srt")
		_, m := e2eutil.HTTPGet(t, n.HTTPURL+"/metrics")
		return json.Unmarshal(body, &info) == nil && info.Viewers["srt"] == 1 &&
			strings.Contains(string(m), `meshcast_viewers{protocol="srt"} 1`) &&
			strings.Contains(string(m), `meshcast_stream_viewers{protocol="srt",stream="live/srt"} 1`)
	})
	v, err := e2eutil.DialRTMPViewer(fmt.Sprintf("127.0.0.1:%d", n.RTMPPort), "live/srt")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Conn.Close()
	testutil.WaitFor(t, 10*time.Second, "60 frames over RTMP", func() bool { return v.Video.Load() >= 60 && v.Audio.Load() > 0 })
	if v.BackTS.Load() != 0 {
		t.Errorf("video timestamps went back %d times", v.BackTS.Load())
	}
	// The session is listed as SRT.
	code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/live/srt")
	if code != 200 || !strings.Contains(strings.Join(strings.Fields(string(body)), ""), `"protocol":"srt"`) {
		t.Errorf("stream: %d %s", code, body)
	}
}

// TestSRTPublishAuth: from another machine, SRT publishing needs the
// publish key in the stream ID, as RTMP does.
func TestSRTPublishAuth(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.PublishAuth = "always"
		c.PublishKeys = []string{"live=srt-key-of-tests"}
	})
	port := n.SRTAddr().(*net.UDPAddr).Port
	publishSRT(t, fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/nokey", port))
	publishSRT(t, fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/keyed?key=srt-key-of-tests", port))
	testutil.WaitFor(t, 15*time.Second, "the keyed stream to be live", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(n.HTTPURL + "/api/v1/streams/live/keyed")
		return code == 200
	})
	if code, _ := e2eutil.HTTPGetQuiet(n.HTTPURL + "/api/v1/streams/live/nokey"); code != 404 {
		t.Errorf("a stream published without the key: %d, want 404", code)
	}
}
