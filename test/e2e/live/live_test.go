//go:build unix

package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// recordWith runs "ffmpeg -i URL -vcodec copy -acodec copy -frames:v 150
// output.mp4" and checks what a user would: h264 and aac, 150 frames, and
// timestamps spanning no more than 5.2 s (no frames lost).
func recordWith(t *testing.T, url string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "output.mp4")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-i", url, "-vcodec", "copy", "-acodec", "copy", "-frames:v", "150", out).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg -i %s: %v\n%s", url, err, b)
	}
	p := e2eutil.FFprobe(t, out)
	if !slices.Contains(p.Codecs, "h264") || !slices.Contains(p.Codecs, "aac") {
		t.Errorf("%s: codecs %v, want h264 and aac", url, p.Codecs)
	}
	if len(p.VideoPTS) != 150 {
		t.Errorf("%s: %d video frames, want 150", url, len(p.VideoPTS))
	}
	if s := e2eutil.Span(p.VideoPTS); s > 5.2 {
		t.Errorf("%s: 150 frames span %.2f s of timestamps, want <= 5.2 s (frames lost)", url, s)
	}
	if p.Width != 640 || p.Height != 360 {
		t.Errorf("%s: picture %dx%d, want 640x360", url, p.Width, p.Height)
	}
	if p.AudioPkts == 0 {
		t.Errorf("%s: no audio packets", url)
	}
}

func TestPublishAndPlayWithFFmpeg(t *testing.T) {
	n := e2eutil.StartNode(t, nil)
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")

	t.Run("rtmp", func(t *testing.T) { recordWith(t, n.RTMPURL("live/stream")) })
	t.Run("http-flv", func(t *testing.T) { recordWith(t, n.HTTPURL+"/live/stream.flv") })
	t.Run("hls", func(t *testing.T) { recordWith(t, n.HTTPURL+"/live/stream/index.m3u8") })
	t.Run("hls-redirect", func(t *testing.T) {
		c := e2eutil.HTTPNoRedirect()
		resp, err := c.Get(n.HTTPURL + "/live/stream.m3u8")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "/live/stream/index.m3u8" {
			t.Fatalf("GET /live/stream.m3u8: %d Location %q, want 302 to /live/stream/index.m3u8", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("api", func(t *testing.T) {
		code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/live/stream")
		if code != 200 {
			t.Fatalf("GET stream: %d %s", code, body)
		}
		var s struct {
			Name       string         `json:"name"`
			Live       bool           `json:"live"`
			BitrateBPS int64          `json:"bitrate_bps"`
			Uptime     float64        `json:"uptime_seconds"`
			Viewers    map[string]int `json:"viewers"`
			Video      struct {
				Codec         string
				Width, Height int
			} `json:"video"`
			Audio struct {
				Codec      string `json:"codec"`
				SampleRate int    `json:"sample_rate"`
			} `json:"audio"`
			Publisher struct {
				RemoteAddr string `json:"remote_addr"`
			} `json:"publisher"`
		}
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatal(err)
		}
		if s.Name != "live/stream" || !s.Live || s.Video.Codec != "h264" || s.Video.Width != 640 || s.Video.Height != 360 ||
			s.Audio.Codec != "aac" || s.Audio.SampleRate != 48000 || !strings.HasPrefix(s.Publisher.RemoteAddr, "127.0.0.1:") {
			t.Errorf("stream info: %s", body)
		}
		// ffmpeg sends about 2128 kbit/s; allow for rate control.
		if s.BitrateBPS < 500_000 || s.BitrateBPS > 6_000_000 {
			t.Errorf("bitrate %d bit/s, want about 2 Mbit/s", s.BitrateBPS)
		}
		// The HLS player of the subtest above polled playlists moments ago;
		// the RTMP and FLV players have left.
		if s.Viewers["hls"] != 1 || s.Viewers["rtmp"] != 0 || s.Viewers["flv"] != 0 || s.Uptime <= 0 {
			t.Errorf("viewers %v uptime %v, want one HLS viewer", s.Viewers, s.Uptime)
		}
		code, body = e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams")
		if code != 200 || !strings.Contains(string(body), `"live/stream"`) {
			t.Errorf("list: %d %s", code, body)
		}
		code, body = e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/live/nothing")
		if code != 404 || !strings.Contains(string(body), `"stream_not_found"`) {
			t.Errorf("missing stream: %d %s", code, body)
		}
	})
}

func TestGStreamerPublishes(t *testing.T) {
	t.Parallel()
	testutil.Need(t, "gst-launch-1.0", "ffprobe")
	n := e2eutil.StartNode(t, nil)
	aac := "avenc_aac"
	if exec.Command("gst-inspect-1.0", aac).Run() != nil {
		aac = "voaacenc"
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pipeline := fmt.Sprintf("videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! "+
		"x264enc tune=zerolatency speed-preset=veryfast key-int-max=30 ! h264parse ! flvmux name=mux streamable=true ! "+
		"rtmp2sink location=rtmp://localhost:%d/live/gst "+
		"audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! %s ! aacparse ! mux.", n.RTMPPort, aac)
	cmd := exec.CommandContext(ctx, "gst-launch-1.0", append([]string{"-q"}, strings.Fields(pipeline)...)...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	e2eutil.WaitLive(t, n, "live/gst")

	probeCtx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	b, err := exec.CommandContext(probeCtx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json",
		n.RTMPURL("live/gst")).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v; gst: %s", err, out)
	}
	if !strings.Contains(string(b), `"h264"`) || !strings.Contains(string(b), `"aac"`) || !strings.Contains(string(b), `"width": 320`) {
		t.Errorf("ffprobe of GStreamer stream: %s", b)
	}
}

func TestFiftyPlayers(t *testing.T) {
	n := e2eutil.StartNode(t, nil)
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")

	viewers := make([]*e2eutil.RTMPViewer, 50)
	var wg sync.WaitGroup
	errs := make(chan error, len(viewers))
	for i := range viewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := e2eutil.DialRTMPViewer(n.RTMPAddr().String(), "live/stream")
			if err != nil {
				errs <- err
				return
			}
			viewers[i] = v
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal("player:", err)
	}
	for _, v := range viewers {
		t.Cleanup(v.Close)
	}
	// Every player gets 3 s of video (90 frames at 30 fps) and audio.
	testutil.WaitFor(t, 30*time.Second, "every player to receive 90 video frames", func() bool {
		for _, v := range viewers {
			if v.Video.Load() < 90 {
				return false
			}
		}
		return true
	})
	for i, v := range viewers {
		if v.Audio.Load() == 0 || v.BackTS.Load() != 0 {
			t.Errorf("player %d: %d audio frames, %d backward timestamps", i, v.Audio.Load(), v.BackTS.Load())
		}
	}
	if got := n.Hub.Get("live/stream").Info().Readers["rtmp"]; got != 50 {
		t.Errorf("stream reports %d rtmp readers, want 50", got)
	}
}

func TestSecondPublisherRefused(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, nil)
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	s := e2eutil.WaitLive(t, n, "live/stream")
	first := s.Info().Publisher.RemoteAddr
	v := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	v.WaitFrames(t, 30, 15*time.Second)

	err := e2eutil.TryPublish(t, n.RTMPAddr().String(), "", "live/stream")
	if !errors.Is(err, rtmp.ErrRefused) || !strings.Contains(err.Error(), "NetStream.Publish.BadName") {
		t.Fatalf("second publish: %v, want refusal with NetStream.Publish.BadName", err)
	}
	// The first publisher and its viewer carry on.
	v.WaitFrames(t, 60, 15*time.Second)
	if got := s.Info().Publisher.RemoteAddr; got != first {
		t.Errorf("publisher changed from %s to %s", first, got)
	}
}

func TestStalledViewerDoesNotHoldBackOthers(t *testing.T) {
	n := e2eutil.StartNode(t, func(c *config.Config) { c.WriteTimeout = 2 * time.Second })
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	s := e2eutil.WaitLive(t, n, "live/stream")
	good := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	stalled := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	stalled.WaitFrames(t, 10, 15*time.Second)
	stalled.Stalled.Store(true) // stops reading; its socket buffers fill

	// While it is stalled, the other viewer keeps receiving in real time.
	for i := 0; i < 3; i++ {
		good.WaitFrames(t, 30, 5*time.Second)
	}
	// The server closes or skips the stalled viewer.
	testutil.WaitFor(t, 30*time.Second, "the stalled viewer to be closed or skipped", func() bool {
		st := s.Stats()
		return st.ReaderCount["rtmp"] == 1 || st.Skips > 0
	})
	good.WaitFrames(t, 30, 5*time.Second)
	if good.BackTS.Load() != 0 {
		t.Errorf("good viewer saw %d backward timestamps", good.BackTS.Load())
	}
}

func TestPublisherReconnectWithinGrace(t *testing.T) {
	n := e2eutil.StartNode(t, func(c *config.Config) { c.PublisherGrace = 5 * time.Second })
	stop := e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")
	v := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	v.WaitFrames(t, 30, 15*time.Second)

	stop() // publisher drops
	testutil.WaitFor(t, 5*time.Second, "publisher to detach", func() bool { return !n.Hub.Get("live/stream").HasPublisher() })
	before := v.LastTS.Load()
	time.Sleep(time.Second)
	if v.Err.Load() != nil || v.Ended.Load() {
		t.Fatalf("viewer dropped with its publisher: %v", v.Err.Load())
	}
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream")) // returns within the grace period
	v.WaitFrames(t, 60, 20*time.Second)
	if v.LastTS.Load() <= before || v.BackTS.Load() != 0 {
		t.Errorf("timestamps after reconnect: last %d before %d, %d went backwards", v.LastTS.Load(), before, v.BackTS.Load())
	}
}

func TestPublisherGoneAfterGrace(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, func(c *config.Config) { c.PublisherGrace = time.Second })
	stop := e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")
	v := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	v.WaitFrames(t, 30, 15*time.Second)
	stop()
	select {
	case <-v.Done:
	case <-time.After(10 * time.Second):
		t.Fatal("viewer not ended after the grace period")
	}
	if !v.Ended.Load() {
		t.Errorf("viewer ended without NetStream.Play.UnpublishNotify: %v", v.Err.Load())
	}
	if n.Hub.Get("live/stream") != nil {
		t.Error("stream still listed after its grace period")
	}
	// A new publish under the same name works and new viewers get it.
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")
	v2 := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	v2.WaitFrames(t, 30, 15*time.Second)
}

func TestUnsupportedCodecRefused(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, nil)
	in := e2eutil.Input(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// FLV1 (Sorenson H.263) video and MP3 audio: not H.264/AAC.
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-t", "10",
		"-i", in, "-c:v", "flv1", "-c:a", "libmp3lame", "-ar", "44100", "-f", "flv", n.RTMPURL("live/sorenson")).CombinedOutput()
	if err == nil {
		t.Fatalf("ffmpeg published an unsupported codec without error: %s", out)
	}
	if ctx.Err() != nil {
		t.Fatal("ffmpeg was not disconnected")
	}
	// The node still serves.
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")
	if s := n.Hub.Get(streamname.Name("live/sorenson")); s != nil && s.HasPublisher() {
		t.Error("unsupported stream still has a publisher")
	}
}
