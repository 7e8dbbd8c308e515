//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/transcode"
)

// source720p is a 20 s 1280x720 H.264/AAC clip (keyframes every 2 s),
// published with -c copy so the publisher costs no CPU.
func source720p(t *testing.T) string {
	t.Helper()
	return sharedClip(t, "source720p.mp4", "1280x720", 20, "96k")
}

// publishLoop publishes file in a loop with -c copy until stop or the end
// of the test.
func publishLoop(t *testing.T, file, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", file, "-c", "copy", "-f", "flv", url)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// videoSize is what ffprobe reads as the size of a live stream's video.
func videoSize(url string) (int, int, error) {
	codec, w, h, err := probeVideo(url)
	if err == nil && codec != "h264" {
		err = fmt.Errorf("ffprobe %s: codec %s", url, codec)
	}
	return w, h, err
}

// transcodeJob is one entry of GET /api/v1/transcode.
type transcodeJob struct {
	Stream     string   `json:"stream"`
	Node       string   `json:"node"`
	State      string   `json:"state"`
	Reason     string   `json:"reason"`
	Renditions []string `json:"renditions"`
	Restarts   int      `json:"restarts"`
	FPS        float64  `json:"fps"`
	Speed      float64  `json:"speed"`
	PID        int      `json:"pid"`
}

// transcodeJobOf returns a node's job for a stream, if it lists one.
func transcodeJobOf(t *testing.T, httpURL, name string) (transcodeJob, bool) {
	t.Helper()
	code, body := httpGet(t, httpURL+"/api/v1/transcode")
	var out struct {
		Jobs []transcodeJob `json:"jobs"`
	}
	if code != 200 || json.Unmarshal(body, &out) != nil {
		t.Fatalf("GET /api/v1/transcode: %d %s", code, body)
	}
	for _, j := range out.Jobs {
		if j.Stream == name {
			return j, true
		}
	}
	return transcodeJob{}, false
}

// fastLadder is the default ladder at x264's ultrafast preset, so that
// three renditions of 720p run beside the tests on two cores.
func fastLadder() []transcode.Rendition {
	l := transcode.DefaultLadder()
	for i := range l {
		l[i].Preset = "ultrafast"
	}
	return l
}

func TestTranscodeLadder(t *testing.T) {
	if testing.Short() {
		t.Skip("transcoding test: skipped with -short")
	}
	src := source720p(t)
	n := startNode(t, func(c *config.Config) {
		c.Transcode = true
		c.Apps = map[string]config.AppConfig{"live": {Ladder: fastLadder()}}
	})
	const name = "live/abr"
	stopPublisher := publishLoop(t, src, n.rtmpURL(name))
	want := map[string]string{"": "1280x720", "_720p": "1280x720", "_480p": "854x480", "_360p": "640x360"}

	t.Run("master.m3u8 lists the renditions within 10 s", func(t *testing.T) {
		waitFor(t, 10*time.Second, "the source to be live", func() bool {
			code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/" + name)
			return code == 200
		})
		live := time.Now()
		var master string
		waitFor(t, 10*time.Second, "master.m3u8 to list the source and three renditions", func() bool {
			code, body := httpGet(t, n.httpURL+"/"+name+"/master.m3u8")
			master = string(body)
			return code == 200 && strings.Count(master, "#EXT-X-STREAM-INF:") == 4
		})
		t.Logf("master.m3u8 complete %v after the source went live:\n%s", time.Since(live).Round(100*time.Millisecond), master)
		for _, res := range []string{"RESOLUTION=1280x720", "RESOLUTION=854x480", "RESOLUTION=640x360", "CODECS=\"avc1.", "mp4a.40.2", "BANDWIDTH="} {
			if !strings.Contains(master, res) {
				t.Errorf("master.m3u8 lacks %s", res)
			}
		}
		for _, uri := range []string{"\nvideo1_stream.m3u8", "\n../abr_720p/", "\n../abr_480p/", "\n../abr_360p/"} {
			if !strings.Contains(master, uri) {
				t.Errorf("master.m3u8 lacks a URI starting %q", strings.TrimPrefix(uri, "\n"))
			}
		}
	})
	t.Run("each rendition plays at its size", func(t *testing.T) {
		for suffix, size := range want {
			w, h, err := videoSize(n.httpURL + "/" + name + suffix + ".flv")
			if err != nil || fmt.Sprintf("%dx%d", w, h) != size {
				t.Errorf("%s%s: %dx%d %v, want %s", name, suffix, w, h, err, size)
			}
		}
		probeCodecs(t, n.httpURL+"/"+name+"_480p/index.m3u8")
		job, ok := transcodeJobOf(t, n.httpURL, name)
		if !ok || job.State != "running" || len(job.Renditions) != 3 || job.FPS <= 0 || job.Speed <= 0 {
			t.Errorf("job %+v: want running, 3 renditions, fps and speed", job)
		}
	})
	t.Run("a killed ffmpeg is back within 5 s and the renditions go on", func(t *testing.T) {
		v, err := dialRTMPViewer(fmt.Sprintf("127.0.0.1:%d", n.rtmpPort), name+"_360p")
		if err != nil {
			t.Fatal(err)
		}
		defer v.conn.Close()
		waitFor(t, 10*time.Second, "the 360p viewer's first frames", func() bool { return v.video.Load() > 10 })
		job, _ := transcodeJobOf(t, n.httpURL, name)
		if job.PID == 0 {
			t.Fatalf("job %+v has no PID", job)
		}
		if err := syscall.Kill(job.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		waitFor(t, 5*time.Second, "a new ffmpeg, running", func() bool {
			j, ok := transcodeJobOf(t, n.httpURL, name)
			return ok && j.PID != 0 && j.PID != job.PID && j.Restarts == job.Restarts+1 && j.State == "running"
		})
		t.Logf("ffmpeg back %v after the kill", time.Since(killed).Round(10*time.Millisecond))
		frames := v.video.Load()
		waitFor(t, 10*time.Second, "the same 360p viewer to get 60 more frames", func() bool { return v.video.Load() > frames+60 })
		if v.ended.Load() {
			t.Error("the 360p viewer was told the stream ended")
		}
	})
	t.Run("the source stops: ffmpeg exits and the renditions end", func(t *testing.T) {
		job, _ := transcodeJobOf(t, n.httpURL, name)
		stopPublisher()
		waitFor(t, 15*time.Second, "ffmpeg to exit", func() bool {
			return errors.Is(syscall.Kill(job.PID, 0), syscall.ESRCH)
		})
		waitFor(t, 15*time.Second, "the renditions to end", func() bool {
			for suffix := range want {
				if code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/" + name + suffix); code != 404 {
					return false
				}
			}
			return true
		})
		if _, ok := transcodeJobOf(t, n.httpURL, name); ok {
			t.Error("the job is still listed")
		}
	})
}

// source360p is input.mp4 (640x360): its ladder is the 360p rendition.
func TestTranscodeMax(t *testing.T) {
	if testing.Short() {
		t.Skip("transcoding test: skipped with -short")
	}
	n := startNode(t, func(c *config.Config) {
		c.Transcode, c.TranscodeMax = true, 1
		c.Apps = map[string]config.AppConfig{"live": {Ladder: fastLadder()}}
	})
	publishLoop(t, input(t), n.rtmpURL("live/first"))
	waitFor(t, 15*time.Second, "the first stream's job to run", func() bool {
		j, ok := transcodeJobOf(t, n.httpURL, "live/first")
		return ok && j.State == "running"
	})
	publishLoop(t, input(t), n.rtmpURL("live/second"))
	var job transcodeJob
	waitFor(t, 15*time.Second, "the second stream's job to be refused", func() bool {
		var ok bool
		job, ok = transcodeJobOf(t, n.httpURL, "live/second")
		return ok && job.State == "skipped"
	})
	if !strings.Contains(job.Reason, "--transcode-max 1") {
		t.Errorf("reason %q does not name --transcode-max 1", job.Reason)
	}
	t.Logf("second stream: %s", job.Reason)
	// It is served all the same, without renditions.
	if w, h, err := videoSize(n.httpURL + "/live/second.flv"); err != nil || w != 640 || h != 360 {
		t.Errorf("second stream: %dx%d %v", w, h, err)
	}
	code, body := httpGet(t, n.httpURL+"/live/second/master.m3u8")
	if code != 200 || strings.Count(string(body), "#EXT-X-STREAM-INF:") != 1 {
		t.Errorf("second stream's master.m3u8: %d\n%s\nwant the source alone", code, body)
	}
}

// TestTranscodeCluster: the origin is busy, so its stream's job runs on
// the other node, and the renditions play from both.
func TestTranscodeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	nodes := startClusterNodes(t, func(c *config.Config) {
		c.Transcode = true
		c.Apps = map[string]config.AppConfig{"live": {Ladder: fastLadder()}}
		if c.NodeID == "tc-a" {
			c.TranscodeCPUMax = 0 // always busy: hands every job over
		} else {
			c.TranscodeCPUMax = 100
		}
	}, "tc-a", "tc-b")
	a, b := nodes[0], nodes[1]
	const name = "live/handed"
	publishLoop(t, input(t), a.rtmpURL(name))
	var job transcodeJob
	waitFor(t, 20*time.Second, "the job to run on B", func() bool {
		var ok bool
		job, ok = transcodeJobOf(t, b.httpURL, name)
		return ok && job.State == "running"
	})
	origin, ok := transcodeJobOf(t, a.httpURL, name)
	if !ok || origin.State != "remote" || origin.Node != "tc-b" {
		t.Errorf("A's view of the job: %+v, want remote on tc-b", origin)
	}
	t.Logf("A: %s", origin.Reason)
	for _, n := range []*node{a, b} {
		w, h, err := videoSize(n.httpURL + "/" + name + "_360p.flv")
		if err != nil || w != 640 || h != 360 {
			t.Errorf("%s: 360p rendition %dx%d %v", n.httpURL, w, h, err)
		}
	}
	waitFor(t, 15*time.Second, "A's master.m3u8 to list the rendition made on B", func() bool {
		code, body := httpGet(t, a.httpURL+"/"+name+"/master.m3u8")
		return code == 200 && strings.Contains(string(body), "../handed_360p/")
	})
}
