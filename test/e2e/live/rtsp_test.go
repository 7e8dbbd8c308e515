//go:build unix

package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// udpPair returns an even loopback UDP port whose next port is free too,
// for RTSP's RTP and RTCP.
func udpPair(t *testing.T) (rtp, rtcp string) {
	t.Helper()
	for range 100 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if p%2 != 0 || p > 65000 {
			continue
		}
		c1, err1 := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		c2, err2 := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		if c1 != nil {
			c1.Close()
		}
		if c2 != nil {
			c2.Close()
		}
		if err1 == nil && err2 == nil {
			return fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.1:%d", p+1)
		}
	}
	t.Fatal("no free pair of UDP ports")
	return "", ""
}

// probeRTSP is ffprobe's list of codecs in an RTSP stream read over
// transport (tcp or udp).
func probeRTSP(t *testing.T, url, transport string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", transport,
		"-show_entries", "stream=codec_name,width,height", "-of", "compact", url).Output()
	if err != nil {
		t.Fatalf("ffprobe over RTSP/%s %s: %v", transport, url, err)
	}
	return string(b)
}

// TestRTSP: ffmpeg publishes over RTSP (TCP) with the publish key, and
// the stream is read back over RTMP, HTTP-FLV and RTSP over TCP and UDP;
// an RTMP-published stream plays over RTSP; with --publish-auth always a
// publish without the key is refused.
func TestRTSP(t *testing.T) {
	t.Parallel()
	testutil.Need(t, "ffmpeg", "ffprobe")
	rtp, rtcp := udpPair(t)
	const key = "rtsp-publish-key-0001"
	p := e2eutil.StartProcess(t, "--rtsp-udp-rtp-addr", rtp, "--rtsp-udp-rtcp-addr", rtcp,
		"--publish-auth", "always", "--publish-keys", "live="+key)
	addr := rtspAddr(t, p)

	// ffmpeg publishes over RTSP, TCP, the key in the URL's query.
	ctx, cancel := context.WithCancel(context.Background())
	pub := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", e2eutil.Input(t), "-c:v", "libx264", "-preset", "veryfast", "-g", "30",
		"-c:a", "aac", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+addr+"/live/cam?key="+key)
	if err := pub.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { pub.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/cam")

	e2eutil.ProbeCodecs(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/cam", p.RTMPPort))
	e2eutil.ProbeCodecs(t, p.HTTPURL+"/live/cam.flv")
	for _, transport := range []string{"tcp", "udp"} {
		got := probeRTSP(t, "rtsp://"+addr+"/live/cam", transport)
		if !strings.Contains(got, "codec_name=h264|width=640|height=360") || !strings.Contains(got, "codec_name=aac") {
			t.Errorf("ffprobe over RTSP/%s: %q, want 640x360 h264 and aac", transport, got)
		}
	}

	// An RTMP publisher's stream plays over RTSP.
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/live/fromrtmp?key=%s", p.RTMPPort, key))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/fromrtmp")
	if got := probeRTSP(t, "rtsp://"+addr+"/live/fromrtmp", "tcp"); !strings.Contains(got, "h264") || !strings.Contains(got, "aac") {
		t.Errorf("ffprobe of an RTMP-published stream over RTSP: %q", got)
	}

	// Without the key, nobody publishes, over RTSP as over RTMP.
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-t", "2",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-c:v", "libx264", "-preset", "ultrafast",
		"-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+addr+"/live/nokey").CombinedOutput()
	if err == nil {
		t.Errorf("ffmpeg published over RTSP without the key:\n%s", out)
	}
	if code, _ := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/streams/live/nokey"); code != 404 {
		t.Errorf("live/nokey after a refused RTSP publish: %d, want 404", code)
	}
	if err := e2eutil.TryPublish(t, p.RTMPAddr, "", "live/nokey"); !errors.Is(err, rtmp.ErrRefused) {
		t.Errorf("RTMP publish without the key: %v, want a refusal", err)
	}
}

// rtspAddr reads the RTSP listener's address from the node's log.
func rtspAddr(t *testing.T, p *e2eutil.Proc) string {
	t.Helper()
	var addr string
	testutil.WaitFor(t, 10*time.Second, "the RTSP listener in the log", func() bool {
		for line := range strings.SplitSeq(p.Stderr.String(), "\n") {
			if strings.Contains(line, "rtsp listening") && strings.Contains(line, "tls=false") {
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
