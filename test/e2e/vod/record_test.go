//go:build unix

package vod

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/internal/webhook"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// publishTestSource publishes secs seconds of a test pattern and a tone
// (H.264 with a keyframe every 60 frames, AAC) to url in real time with
// ffmpeg. done receives ffmpeg's exit; stop ends it early.
func publishTestSource(t *testing.T, url string, secs int) (done <-chan error, stop func()) {
	t.Helper()
	testutil.Need(t, "ffmpeg", "ffprobe")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(secs), "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "128k", "-f", "flv", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		ch <- err
		close(exited)
	}()
	stop = func() { cancel(); <-exited }
	t.Cleanup(stop)
	return ch, stop
}

// recordDir lists the files of a record dir, failing on anything but
// recordings.
func recordDir(t *testing.T, dir string) (flvs, parts []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".flv.part"):
			parts = append(parts, filepath.Join(dir, name))
		case strings.HasSuffix(name, ".flv"):
			flvs = append(flvs, filepath.Join(dir, name))
		default:
			t.Errorf("unexpected file %s in the record dir", name)
		}
	}
	return flvs, parts
}

var recordingName = regexp.MustCompile(`^live-rec-\d{8}-\d{6}\.flv$`)

// A stream published to a node with --record all is in the record dir
// once its publisher leaves: an FLV file ffprobe reads as H.264 and AAC
// lasting as long as the publisher sent, announced by on_record_done.
func TestRecordPublishedStream(t *testing.T) {
	rc := e2eutil.NewHookReceiver()
	hooks := httptest.NewServer(rc)
	defer hooks.Close()
	dir := filepath.Join(t.TempDir(), "recordings")
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.Record, c.RecordDir = "all", dir
		c.WebhookURLs, c.WebhookSecret = []string{hooks.URL + "/hooks"}, "webhook-secret"
	})
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("record dir not created: %v", err)
	}
	started := time.Now().UTC()
	done, _ := publishTestSource(t, n.RTMPURL("live/rec"), 10)
	e2eutil.WaitLive(t, n, "live/rec")
	testutil.WaitFor(t, 5*time.Second, "the recording to start", func() bool {
		a := n.Recorder().Active()
		return len(a) == 1 && a[0].Stream == "live/rec" && a[0].Bytes > 0
	})
	if flvs, parts := recordDir(t, dir); len(flvs) != 0 || len(parts) != 1 {
		t.Fatalf("while recording: %q finished, %q being written; want one .flv.part", flvs, parts)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ffmpeg: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("ffmpeg still publishing after 60 s")
	}

	var ev webhook.Event
	testutil.WaitFor(t, 15*time.Second, "on_record_done", func() bool {
		for _, e := range rc.Events() {
			if e.Event == webhook.OnRecordDone {
				ev = e
				return true
			}
		}
		return false
	})
	// The publisher left; the stream waits out its grace period, and the
	// recording is finished already.
	flvs, parts := recordDir(t, dir)
	if len(flvs) != 1 || len(parts) != 0 || !recordingName.MatchString(filepath.Base(flvs[0])) {
		t.Fatalf("after the publisher left: %q finished, %q being written; want one live-rec-YYYYMMDD-HHMMSS.flv", flvs, parts)
	}
	path := flvs[0]
	if ts, err := time.Parse("20060102-150405", strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "live-rec-"), ".flv")); err != nil ||
		ts.Before(started.Truncate(time.Second)) || ts.After(started.Add(10*time.Second)) {
		t.Errorf("file named after %v, want the publish time %v (UTC)", ts, started)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Stream != "live/rec" || ev.Recording != strings.TrimSuffix(filepath.Base(path), ".flv") || ev.Path != path ||
		ev.Bytes != st.Size() || math.Abs(ev.Duration-10) > 1 || ev.Session == "" || ev.Node == "" ||
		ev.Protocol != "rtmp" || !strings.HasPrefix(ev.RemoteAddr, "127.0.0.1:") {
		t.Errorf("on_record_done = %+v; want live/rec, %s, %d bytes, about 10 s", ev, path, st.Size())
	}
	if bad := rc.Bad(); len(bad) > 0 {
		t.Errorf("bad deliveries: %v", bad)
	}
	if a := n.Recorder().Active(); len(a) != 0 {
		t.Errorf("still recording: %+v", a)
	}

	p := e2eutil.FFprobe(t, path)
	if !strings.Contains(strings.Join(p.Codecs, ","), "h264") || !strings.Contains(strings.Join(p.Codecs, ","), "aac") || p.Width != 640 || p.Height != 360 {
		t.Errorf("ffprobe: codecs %v, %dx%d; want h264 and aac, 640x360", p.Codecs, p.Width, p.Height)
	}
	// The file's timestamps start at 0 and run as long as the publisher
	// sent: its video packets' times tell. ffprobe's format duration is
	// checked too, but it is the onMetaData duration when the publisher
	// sends one (ffmpeg does with -t, even live), so it shows the metadata
	// made it into the file rather than how long the file is.
	if len(p.VideoPTS) < 290 || p.VideoPTS[0] > 0.2 || math.Abs(e2eutil.Span(p.VideoPTS)-10) > 1 {
		t.Errorf("%d video packets from %.3f s spanning %.2f s; want 300 from 0 spanning 10 s", len(p.VideoPTS), p.VideoPTS[0], e2eutil.Span(p.VideoPTS))
	}
	if p.AudioPkts < 400 {
		t.Errorf("%d audio packets, want about 470", p.AudioPkts)
	}
	d := e2eutil.ProbeFloat(t, path, "-show_entries", "format=duration")
	if math.Abs(d-10) > 1 {
		t.Errorf("ffprobe duration %.2f s, want 10 ± 1", d)
	}
	f := e2eutil.DecodedFrames(t, path)
	if f < 290 {
		t.Errorf("%d video frames decoded, want about 300", f)
	}
	t.Logf("%s: %d bytes, ffprobe duration %.3f s, video packets over %.3f s, %d frames decoded, %d audio packets; on_record_done duration %.3f s",
		filepath.Base(path), st.Size(), d, e2eutil.Span(p.VideoPTS), f, p.AudioPkts, ev.Duration)

	// The recording is in the on-demand library and plays from it, as MP4
	// (remuxed from the FLV) and as HLS.
	assertInLibrary(t, n.HTTPURL, ev.Recording, 10)
}

// assertInLibrary checks that the node lists recording in its on-demand
// library and that it plays, as MP4 and as HLS, for secs ± 1 s.
func assertInLibrary(t *testing.T, httpURL, recording string, secs float64) {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, httpURL+"/api/v1/vod")
	var lib struct {
		Assets []struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"assets"`
	}
	if json.Unmarshal(body, &lib) != nil || code != 200 || len(lib.Assets) != 1 || lib.Assets[0].Name != recording || lib.Assets[0].Kind != "flv" {
		t.Fatalf("GET /api/v1/vod: %d %s; want the recording %s alone", code, body, recording)
	}
	for _, path := range []string{"/vod/" + recording + ".mp4", "/vod/" + recording + "/index.m3u8"} {
		if d := durationOf(t, httpURL+path); math.Abs(d-secs) > 1 {
			t.Errorf("%s plays %.2f s, want %.0f ± 1", path, d, secs)
		}
		e2eutil.ProbeCodecs(t, httpURL+path)
	}
}

// A server killed while recording leaves a .part file that plays up to
// where it was cut; the next start on the same record dir recovers it to
// .flv.
func TestRecordSurvivesACrash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	p := e2eutil.StartProcess(t, "--record", "all", "--record-dir", dir)
	done, stop := publishTestSource(t, fmt.Sprintf("rtmp://localhost:%d/live/rec", p.RTMPPort), 60)
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/rec")
	time.Sleep(5 * time.Second) // 150 frames sent, less the encoder's delay
	p.Kill(t)
	select {
	case <-done: // the server went away: ffmpeg gives up
	case <-time.After(10 * time.Second):
		stop()
	}

	flvs, parts := recordDir(t, dir)
	if len(flvs) != 0 || len(parts) != 1 {
		t.Fatalf("after SIGKILL: %q finished, %q being written; want one .flv.part", flvs, parts)
	}
	part := parts[0]
	cut := e2eutil.DecodedFrames(t, part)
	if cut <= 60 {
		t.Fatalf("the .part file left by the crash decodes to %d frames, want over 60 (2 s)", cut)
	}
	before, err := os.Stat(part)
	if err != nil {
		t.Fatal(err)
	}

	p2 := e2eutil.StartProcess(t, "--record", "all", "--record-dir", dir)
	flvs, parts = recordDir(t, dir)
	if len(flvs) != 1 || len(parts) != 0 || flvs[0] != strings.TrimSuffix(part, ".part") {
		t.Fatalf("after the restart: %q finished, %q being written; want %s", flvs, parts, strings.TrimSuffix(part, ".part"))
	}
	st, err := os.Stat(flvs[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > before.Size() || st.Size() < before.Size()-512<<10 {
		t.Errorf("recovered %d bytes of %d: more than the last tag cut", st.Size(), before.Size())
	}
	got := e2eutil.DecodedFrames(t, flvs[0])
	if got < cut-1 || got > cut {
		t.Errorf("the recovered file decodes to %d frames, the cut one to %d", got, cut)
	}
	t.Logf("cut by SIGKILL at %d bytes, %d frames; recovered %d bytes, %d frames", before.Size(), cut, st.Size(), got)
	if pr := e2eutil.FFprobe(t, flvs[0]); !strings.Contains(strings.Join(pr.Codecs, ","), "h264") || !strings.Contains(strings.Join(pr.Codecs, ","), "aac") {
		t.Errorf("recovered file: codecs %v, want h264 and aac", pr.Codecs)
	}
	testutil.WaitFor(t, 5*time.Second, "the recovery in the log", func() bool {
		return strings.Contains(p2.Stderr.String(), "recovered a recording interrupted by a crash")
	})
	// What was recorded before the crash, about 5 s, is in the library.
	assertInLibrary(t, p2.HTTPURL, strings.TrimSuffix(filepath.Base(flvs[0]), ".flv"), float64(got)/30)
}
