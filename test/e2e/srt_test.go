//go:build unix

package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
)

// publishSRT publishes input.mp4 in a loop over SRT as MPEG-TS, with -c
// copy, until the test ends.
func publishSRT(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", input(t), "-c", "copy", "-f", "mpegts", url)
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
	n := startNode(t, nil)
	port := n.SRTAddr().(*net.UDPAddr).Port
	publishSRT(t, fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/srt", port))
	waitFor(t, 15*time.Second, "the SRT stream to be live", func() bool {
		code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/live/srt")
		return code == 200
	})
	for _, url := range []string{n.httpURL + "/live/srt.flv", n.httpURL + "/live/srt/index.m3u8"} {
		w, h, err := videoSize(url)
		if err != nil || w != 640 || h != 360 {
			t.Errorf("%s: %dx%d %v, want 640x360 h264", url, w, h, err)
		}
		probeCodecs(t, url)
	}
	// SRT playback, as ffmpeg and players read it.
	read := fmt.Sprintf("srt://127.0.0.1:%d?streamid=read:live/srt", port)
	if w, h, err := videoSize(read); err != nil || w != 640 || h != 360 {
		t.Errorf("%s: %dx%d %v, want 640x360 h264", read, w, h, err)
	}
	probeCodecs(t, read)
	v, err := dialRTMPViewer(fmt.Sprintf("127.0.0.1:%d", n.rtmpPort), "live/srt")
	if err != nil {
		t.Fatal(err)
	}
	defer v.conn.Close()
	waitFor(t, 10*time.Second, "60 frames over RTMP", func() bool { return v.video.Load() >= 60 && v.audio.Load() > 0 })
	if v.backTS.Load() != 0 {
		t.Errorf("video timestamps went back %d times", v.backTS.Load())
	}
	// The session is listed as SRT.
	code, body := httpGet(t, n.httpURL+"/api/v1/streams/live/srt")
	if code != 200 || !strings.Contains(strings.Join(strings.Fields(string(body)), ""), `"protocol":"srt"`) {
		t.Errorf("stream: %d %s", code, body)
	}
}

// TestSRTPublishAuth: from another machine, SRT publishing needs the
// publish key in the stream ID, as RTMP does.
func TestSRTPublishAuth(t *testing.T) {
	n := startNode(t, func(c *config.Config) {
		c.PublishAuth = "always"
		c.PublishKeys = []string{"live=srt-key-of-tests"}
	})
	port := n.SRTAddr().(*net.UDPAddr).Port
	publishSRT(t, fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/nokey", port))
	publishSRT(t, fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/keyed?key=srt-key-of-tests", port))
	waitFor(t, 15*time.Second, "the keyed stream to be live", func() bool {
		code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/live/keyed")
		return code == 200
	})
	if code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/live/nokey"); code != 404 {
		t.Errorf("a stream published without the key: %d, want 404", code)
	}
}
