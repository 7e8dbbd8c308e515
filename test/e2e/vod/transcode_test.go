//go:build unix

package vod

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/internal/transcode"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// source720p is a 20 s 1280x720 H.264/AAC clip (keyframes every 2 s),
// published with -c copy so the publisher costs no CPU.
func source720p(t *testing.T) string {
	t.Helper()
	return e2eutil.SharedClip(t, "source720p.mp4", "1280x720", 20, "96k")
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
	code, body := e2eutil.HTTPGet(t, httpURL+"/api/v1/transcode")
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
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.Transcode = true
		c.Apps = map[string]config.AppConfig{"live": {Ladder: fastLadder()}}
	})
	const name = "live/abr"
	stopPublisher := e2eutil.PublishLoop(t, src, n.RTMPURL(name))
	want := map[string]string{"": "1280x720", "_720p": "1280x720", "_480p": "854x480", "_360p": "640x360"}

	t.Run("master.m3u8 lists the renditions within 10 s", func(t *testing.T) {
		testutil.WaitFor(t, 10*time.Second, "the source to be live", func() bool {
			code, _ := e2eutil.HTTPGetQuiet(n.HTTPURL + "/api/v1/streams/" + name)
			return code == 200
		})
		live := time.Now()
		var master string
		testutil.WaitFor(t, 10*time.Second, "master.m3u8 to list the source and three renditions", func() bool {
			code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/"+name+"/master.m3u8")
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
			w, h, err := e2eutil.VideoSize(n.HTTPURL + "/" + name + suffix + ".flv")
			if err != nil || fmt.Sprintf("%dx%d", w, h) != size {
				t.Errorf("%s%s: %dx%d %v, want %s", name, suffix, w, h, err, size)
			}
		}
		e2eutil.ProbeCodecs(t, n.HTTPURL+"/"+name+"_480p/index.m3u8")
		job, ok := transcodeJobOf(t, n.HTTPURL, name)
		if !ok || job.State != "running" || len(job.Renditions) != 3 || job.FPS <= 0 || job.Speed <= 0 {
			t.Errorf("job %+v: want running, 3 renditions, fps and speed", job)
		}
	})
	t.Run("a killed ffmpeg is back within 5 s and the renditions go on", func(t *testing.T) {
		v, err := e2eutil.DialRTMPViewer(fmt.Sprintf("127.0.0.1:%d", n.RTMPPort), name+"_360p")
		if err != nil {
			t.Fatal(err)
		}
		defer v.Conn.Close()
		testutil.WaitFor(t, 10*time.Second, "the 360p viewer's first frames", func() bool { return v.Video.Load() > 10 })
		job, _ := transcodeJobOf(t, n.HTTPURL, name)
		if job.PID == 0 {
			t.Fatalf("job %+v has no PID", job)
		}
		if err := syscall.Kill(job.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		testutil.WaitFor(t, 5*time.Second, "a new ffmpeg, running", func() bool {
			j, ok := transcodeJobOf(t, n.HTTPURL, name)
			return ok && j.PID != 0 && j.PID != job.PID && j.Restarts == job.Restarts+1 && j.State == "running"
		})
		t.Logf("ffmpeg back %v after the kill", time.Since(killed).Round(10*time.Millisecond))
		frames := v.Video.Load()
		testutil.WaitFor(t, 10*time.Second, "the same 360p viewer to get 60 more frames", func() bool { return v.Video.Load() > frames+60 })
		if v.Ended.Load() {
			t.Error("the 360p viewer was told the stream ended")
		}
	})
	t.Run("the source stops: ffmpeg exits and the renditions end", func(t *testing.T) {
		job, _ := transcodeJobOf(t, n.HTTPURL, name)
		stopPublisher()
		testutil.WaitFor(t, 15*time.Second, "ffmpeg to exit", func() bool {
			return errors.Is(syscall.Kill(job.PID, 0), syscall.ESRCH)
		})
		testutil.WaitFor(t, 15*time.Second, "the renditions to end", func() bool {
			for suffix := range want {
				if code, _ := e2eutil.HTTPGetQuiet(n.HTTPURL + "/api/v1/streams/" + name + suffix); code != 404 {
					return false
				}
			}
			return true
		})
		if _, ok := transcodeJobOf(t, n.HTTPURL, name); ok {
			t.Error("the job is still listed")
		}
	})
}

// source360p is input.mp4 (640x360): its ladder is the 360p rendition.
func TestTranscodeMax(t *testing.T) {
	if testing.Short() {
		t.Skip("transcoding test: skipped with -short")
	}
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.Transcode, c.TranscodeMax = true, 1
		c.Apps = map[string]config.AppConfig{"live": {Ladder: fastLadder()}}
	})
	e2eutil.PublishLoop(t, e2eutil.Input(t), n.RTMPURL("live/first"))
	testutil.WaitFor(t, 15*time.Second, "the first stream's job to run", func() bool {
		j, ok := transcodeJobOf(t, n.HTTPURL, "live/first")
		return ok && j.State == "running"
	})
	e2eutil.PublishLoop(t, e2eutil.Input(t), n.RTMPURL("live/second"))
	var job transcodeJob
	testutil.WaitFor(t, 15*time.Second, "the second stream's job to be refused", func() bool {
		var ok bool
		job, ok = transcodeJobOf(t, n.HTTPURL, "live/second")
		return ok && job.State == "skipped"
	})
	if !strings.Contains(job.Reason, "--transcode-max 1") {
		t.Errorf("reason %q does not name --transcode-max 1", job.Reason)
	}
	t.Logf("second stream: %s", job.Reason)
	// It is served all the same, without renditions.
	if w, h, err := e2eutil.VideoSize(n.HTTPURL + "/live/second.flv"); err != nil || w != 640 || h != 360 {
		t.Errorf("second stream: %dx%d %v", w, h, err)
	}
	code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/live/second/master.m3u8")
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
	nodes := e2eutil.StartClusterNodes(t, func(c *config.Config) {
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
	e2eutil.PublishLoop(t, e2eutil.Input(t), a.RTMPURL(name))
	var job transcodeJob
	testutil.WaitFor(t, 20*time.Second, "the job to run on B", func() bool {
		var ok bool
		job, ok = transcodeJobOf(t, b.HTTPURL, name)
		return ok && job.State == "running"
	})
	origin, ok := transcodeJobOf(t, a.HTTPURL, name)
	if !ok || origin.State != "remote" || origin.Node != "tc-b" {
		t.Errorf("A's view of the job: %+v, want remote on tc-b", origin)
	}
	t.Logf("A: %s", origin.Reason)
	for _, n := range []*e2eutil.Node{a, b} {
		w, h, err := e2eutil.VideoSize(n.HTTPURL + "/" + name + "_360p.flv")
		if err != nil || w != 640 || h != 360 {
			t.Errorf("%s: 360p rendition %dx%d %v", n.HTTPURL, w, h, err)
		}
	}
	testutil.WaitFor(t, 15*time.Second, "A's master.m3u8 to list the rendition made on B", func() bool {
		code, body := e2eutil.HTTPGet(t, a.HTTPURL+"/"+name+"/master.m3u8")
		return code == 200 && strings.Contains(string(body), "../handed_360p/")
	})
}
