//go:build unix

package transcode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// makeSource encodes a test pattern with a tone into an FLV file, as a
// publisher would send it.
func makeSource(t *testing.T, path, size, rate string, seconds, sampleRate int, x264 ...string) {
	t.Helper()
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=" + rate,
		"-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=440:sample_rate=%d", sampleRate),
		"-t", fmt.Sprint(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p"}
	args = append(args, x264...)
	args = append(args, "-c:a", "aac", "-f", "flv", path)
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("making the source: %v: %s", err, out)
	}
}

// probe runs ffprobe on path and returns its output's lines.
func probe(t *testing.T, path string, args ...string) []string {
	t.Helper()
	args = append([]string{"-v", "error"}, append(args, path)...)
	out, err := exec.Command("ffprobe", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", path, err, out)
	}
	return strings.Fields(string(out))
}

// keyframes returns the presentation times of a file's video keyframes.
func keyframes(t *testing.T, path string) []string {
	return probe(t, path, "-select_streams", "v", "-skip_frame", "nokey",
		"-show_entries", "frame=pts_time", "-of", "default=nw=1:nk=1")
}

// streams returns codec,width,height of each of a file's streams.
func streams(t *testing.T, path string) []string {
	return probe(t, path, "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0")
}

// TestLadderAligned transcodes a file to the fitted default ladder, the
// way the node transcodes a live stream, and checks what a player gets:
// each rendition at its size in H.264 and AAC, with keyframes at the same
// times as the source's and each other's, so HLS segments cut at
// keyframes line up across the variants.
func TestLadderAligned(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct {
		name       string
		size, rate string
		sampleRate int
		x264       []string
		want       map[string]string // rendition name: h264,W,H
	}{
		{
			// No B-frames: the source's video starts 21 ms in, its audio at 0.
			name: "720p30 without B-frames", size: "1280x720", rate: "30", sampleRate: 48000,
			x264: []string{"-preset", "ultrafast", "-g", "45"},
			want: map[string]string{"720p": "h264,1280,720", "480p": "h264,854,480", "360p": "h264,640,360"},
		},
		{
			// Timestamps in ms that are no whole number of 1/29.97 s frames.
			name: "480p29.97 with B-frames", size: "854x480", rate: "30000/1001", sampleRate: 44100,
			x264: []string{"-preset", "veryfast", "-g", "45"},
			want: map[string]string{"480p": "h264,854,480", "360p": "h264,640,360"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "source.flv")
			makeSource(t, src, tc.size, tc.rate, 6, tc.sampleRate, tc.x264...)
			srcKeys := keyframes(t, src)
			if len(srcKeys) < 4 {
				t.Fatalf("source keyframes %v: want one every 1.5 s", srcKeys)
			}

			var w, h int
			fmt.Sscanf(tc.size, "%dx%d", &w, &h)
			ladder := Fit(DefaultLadder(), w, h)
			rec := newRecorder()
			s := New(Config{OnChange: rec.onChange, Logger: quietLogger()})
			defer s.Close()
			err := s.Start(Spec{
				Source: "live/cam",
				Input:  src,
				OutputURL: func(n streamname.Name) string {
					return filepath.Join(dir, n.Stream()+".flv")
				},
				Renditions: ladder,
				Alive:      func() bool { return false }, // the file is the whole stream
			})
			if err != nil {
				t.Fatal(err)
			}
			final := rec.waitStopped(t, 2*time.Minute)
			if final.LastError != "" {
				t.Fatalf("ffmpeg failed: %s", final.LastError)
			}
			if got := rec.states("live/cam"); !slices.Equal(got, []State{StateStarting, StateRunning, StateStopped}) {
				t.Fatalf("OnChange states %v", got)
			}
			var names []string
			for _, r := range ladder {
				names = append(names, "live/cam_"+r.Name)
			}
			if !slices.Equal(final.Renditions, names) {
				t.Fatalf("renditions %v, want %v", final.Renditions, names)
			}
			waitFor(t, time.Second, "job removed", func() bool { return s.Running() == 0 })

			if len(ladder) != len(tc.want) {
				t.Fatalf("Fit(%dx%d) kept %d renditions, want %d", w, h, len(ladder), len(tc.want))
			}
			for _, r := range ladder {
				out := filepath.Join(dir, "cam_"+r.Name+".flv")
				if got := streams(t, out); !slices.Equal(got, []string{tc.want[r.Name], "aac"}) {
					t.Errorf("%s: streams %v, want [%s aac]", r.Name, got, tc.want[r.Name])
				}
				if got := keyframes(t, out); !slices.Equal(got, srcKeys) {
					t.Errorf("%s: keyframes at %v, the source's at %v", r.Name, got, srcKeys)
				}
			}
		})
	}
}

// TestFFmpegRestart kills a real ffmpeg reading at the source's pace, as a
// crash would, and checks that it is back within seconds, then stopped
// for good.
func TestFFmpegRestart(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	dir := t.TempDir()
	src := filepath.Join(dir, "source.flv")
	makeSource(t, src, "160x120", "30", 60, 48000, "-preset", "ultrafast", "-g", "30")
	real, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal(err)
	}
	// Args has no -re: a live input comes at its own pace, a file does
	// not unless told to.
	wrapper := filepath.Join(dir, "ffmpeg-re")
	if err := os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec %q -re \"$@\"\n", real)), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	s := New(Config{FFmpeg: wrapper, OnChange: rec.onChange, Logger: quietLogger()}) // default 1 s backoff
	defer s.Close()
	out := filepath.Join(dir, "cam_120p.flv")
	err = s.Start(Spec{
		Source:     "live/cam",
		Input:      src,
		OutputURL:  func(streamname.Name) string { return out },
		Renditions: []Rendition{{Name: "120p", Height: 120, VideoBitrate: "100k", Preset: "ultrafast", AudioBitrate: "32k"}},
		Alive:      func() bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	running := func() bool { st, _ := s.Job("live/cam"); return st.State == StateRunning }
	waitFor(t, 10*time.Second, "ffmpeg running", running)
	// The first report comes with the first frames, before ffmpeg has
	// a rate to tell; the next one a second later.
	waitFor(t, 5*time.Second, "frame rate and speed", func() bool {
		st, _ := s.Job("live/cam")
		return st.FPS > 0 && st.Speed > 0
	})
	first, _ := s.Job("live/cam")

	proc, err := os.FindProcess(first.PID)
	if err == nil {
		err = proc.Kill() // SIGKILL
	}
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "ffmpeg running again", func() bool {
		st, _ := s.Job("live/cam")
		return st.State == StateRunning && st.Restarts == 1 && st.PID != first.PID
	})
	second, _ := s.Job("live/cam")
	if !strings.Contains(second.LastError, "signal: killed") || !second.Started.Equal(first.Started) {
		t.Errorf("after the restart: %+v", second)
	}

	s.Stop("live/cam")
	for _, pid := range []int{first.PID, second.PID} {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("ffmpeg %d after Stop: kill 0 = %v, want ESRCH", pid, err)
		}
	}
	if jobs := s.Jobs(); len(jobs) != 0 {
		t.Fatalf("Jobs after Stop: %+v", jobs)
	}
	want := []State{StateStarting, StateRunning, StateRestarting, StateStarting, StateRunning, StateStopped}
	if got := rec.states("live/cam"); !slices.Equal(got, want) {
		t.Fatalf("OnChange states %v, want %v", got, want)
	}
	// SIGTERM let ffmpeg finish the file it was writing.
	if got := streams(t, out); !slices.Equal(got, []string{"h264,160,120", "aac"}) {
		t.Fatalf("output streams %v", got)
	}
}
