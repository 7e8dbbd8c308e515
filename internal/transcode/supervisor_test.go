//go:build unix

package transcode

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/ffproc"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// These tests stand a shell script in for ffmpeg, to drive the
// supervisor through exits, signals and progress reports cheaply; the
// tests in ffmpeg_test.go run the real thing.

// fakeFFmpeg writes an executable shell script to stand for ffmpeg; it
// gets ffmpeg's arguments and can use $DIR, a directory of its own.
func fakeFFmpeg(t *testing.T, body string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "ffmpeg")
	script := fmt.Sprintf("#!/bin/sh\nDIR=%q\n%s\n", dir, body)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// quietLogger keeps the supervisor's logs out of test output unless -v.
func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// recorder collects what OnChange reports.
type recorder struct {
	mu      sync.Mutex
	changes []change
	stopped chan Status
}

type change struct {
	Status
	at time.Time
}

func newRecorder() *recorder { return &recorder{stopped: make(chan Status, 16)} }

func (r *recorder) onChange(st Status) {
	r.mu.Lock()
	r.changes = append(r.changes, change{st, time.Now()})
	r.mu.Unlock()
	if st.State == StateStopped {
		r.stopped <- st
	}
}

func (r *recorder) of(source string) []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []change
	for _, c := range r.changes {
		if c.Stream == source {
			out = append(out, c)
		}
	}
	return out
}

func (r *recorder) states(source string) []State {
	var out []State
	for _, c := range r.of(source) {
		out = append(out, c.State)
	}
	return out
}

func (r *recorder) waitStopped(t *testing.T, timeout time.Duration) Status {
	t.Helper()
	select {
	case st := <-r.stopped:
		return st
	case <-time.After(timeout):
		t.Fatalf("no job stopped within %v; changes: %+v", timeout, r.changes)
		return Status{}
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}

// processGone tells whether pid has ended: no such process, or a zombie
// that no one has reaped yet (an orphan's parent may not reap in a
// container).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func testSpec(source streamname.Name) Spec {
	return Spec{
		Source:     source,
		Input:      "rtmp://127.0.0.1:1935/" + string(source),
		OutputURL:  func(n streamname.Name) string { return "rtmp://127.0.0.1:1935/" + string(n) },
		Renditions: []Rendition{{Name: "240p", Height: 240, VideoBitrate: "300k"}},
	}
}

func jobPID(s *Supervisor, name streamname.Name) func() bool {
	return func() bool { st, ok := s.Job(name); return ok && st.PID > 0 }
}

func TestStartRefuses(t *testing.T) {
	ffmpeg, _ := fakeFFmpeg(t, "exec sleep 600")
	s := New(Config{FFmpeg: ffmpeg, Max: 1, Logger: quietLogger()})
	defer s.Close()

	bad := map[string]func(*Spec){
		"bad source":       func(sp *Spec) { sp.Source = "cam" },
		"reserved app":     func(sp *Spec) { sp.Source = "api/cam" },
		"no input":         func(sp *Spec) { sp.Input = "" },
		"no output":        func(sp *Spec) { sp.OutputURL = nil },
		"no renditions":    func(sp *Spec) { sp.Renditions = nil },
		"bad rendition":    func(sp *Spec) { sp.Renditions[0].VideoBitrate = "fast" },
		"same names":       func(sp *Spec) { sp.Renditions = append(sp.Renditions, sp.Renditions[0]) },
		"name too long":    func(sp *Spec) { sp.Source = streamname.Name("live/" + strings.Repeat("c", streamname.MaxStreamLen)) },
		"ffmpeg not found": nil,
	}
	for name, f := range bad {
		sp := testSpec("live/cam")
		var err error
		if f == nil {
			err = New(Config{FFmpeg: filepath.Join(t.TempDir(), "none")}).Start(sp)
		} else {
			f(&sp)
			err = s.Start(sp)
		}
		if err == nil || errors.Is(err, ErrFull) || errors.Is(err, ErrRunning) {
			t.Errorf("%s: Start = %v, want a validation error", name, err)
		}
	}
	if n := s.Running(); n != 0 {
		t.Fatalf("Running after refused starts = %d", n)
	}

	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(testSpec("live/cam")); !errors.Is(err, ErrRunning) {
		t.Fatalf("duplicate Start = %v, want ErrRunning", err)
	}
	if err := s.Start(testSpec("live/other")); !errors.Is(err, ErrFull) {
		t.Fatalf("Start past Max = %v, want ErrFull", err)
	}
	if n := s.Running(); n != 1 {
		t.Fatalf("Running = %d, want 1", n)
	}
	waitFor(t, 5*time.Second, "ffmpeg", jobPID(s, "live/cam"))
	s.Stop("live/cam")
	if err := s.Start(testSpec("live/other")); err != nil {
		t.Fatalf("Start after Stop freed a place: %v", err)
	}
	s.Close()
	s.Close() // twice is fine
	if err := s.Start(testSpec("live/cam")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	if n := s.Running(); n != 0 {
		t.Fatalf("Running after Close = %d", n)
	}
	s.Stop("live/none") // no job: nothing happens
}

func TestProgressMovesToRunning(t *testing.T) {
	ffmpeg, dir := fakeFFmpeg(t, `
printf 'frame=0\nfps=1.5\nspeed=0.5x\nprogress=continue\n'
while [ ! -e "$DIR/go" ]; do sleep 0.02; done
printf 'frame=30\nfps=29.97\nstream_0_0_q=28.0\nspeed=1.01x\nprogress=continue\n'
exec sleep 600`)
	rec := newRecorder()
	s := New(Config{FFmpeg: ffmpeg, OnChange: rec.onChange, Logger: quietLogger()})
	defer s.Close()
	before := time.Now()
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "first progress block", func() bool { st, _ := s.Job("live/cam"); return st.Speed == 0.5 })
	st, _ := s.Job("live/cam")
	if st.State != StateStarting || st.FPS != 1.5 {
		t.Fatalf("before the first frame: %+v, want starting at 1.5 fps", st)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "running", func() bool { st, _ := s.Job("live/cam"); return st.State == StateRunning })
	st, _ = s.Job("live/cam")
	if st.FPS != 29.97 || st.Speed != 1.01 || st.PID <= 0 || st.Restarts != 0 || st.LastError != "" ||
		!slices.Equal(st.Renditions, []string{"live/cam_240p"}) || st.Stream != "live/cam" ||
		st.Started.Before(before) || st.Started.After(time.Now()) {
		t.Fatalf("running status: %+v", st)
	}
	if jobs := s.Jobs(); len(jobs) != 1 || jobs[0].Stream != "live/cam" {
		t.Fatalf("Jobs = %+v", jobs)
	}
	s.Stop("live/cam")
	final := rec.waitStopped(t, time.Second)
	if final.PID != 0 || final.FPS != 0 || final.Stream != "live/cam" {
		t.Fatalf("final status: %+v", final)
	}
	if got, want := rec.states("live/cam"), []State{StateStarting, StateRunning, StateStopped}; !slices.Equal(got, want) {
		t.Fatalf("OnChange states %v, want %v", got, want)
	}
}

func TestStopKillsProcessGroup(t *testing.T) {
	ffmpeg, dir := fakeFFmpeg(t, `
sleep 600 &
echo $! > "$DIR/child.tmp" && mv "$DIR/child.tmp" "$DIR/child"
exec sleep 600`)
	rec := newRecorder()
	s := New(Config{FFmpeg: ffmpeg, OnChange: rec.onChange, Logger: quietLogger()})
	defer s.Close()
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	var child int
	waitFor(t, 5*time.Second, "child process", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "child"))
		if err != nil {
			return false
		}
		_, err = fmt.Sscan(string(b), &child)
		return err == nil
	})
	st, _ := s.Job("live/cam")
	pid := st.PID
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Fatalf("ffmpeg %d is in process group %d (%v), want its own", pid, pgid, err)
	}
	start := time.Now()
	s.Stop("live/cam")
	if d := time.Since(start); d >= ffproc.StopTimeout {
		t.Errorf("Stop took %v: SIGTERM was not enough", d)
	}
	if !processGone(pid) {
		t.Errorf("ffmpeg %d still runs after Stop", pid)
	}
	waitFor(t, 2*time.Second, "child gone", func() bool { return processGone(child) })
	if jobs := s.Jobs(); len(jobs) != 0 {
		t.Fatalf("Jobs after Stop = %+v", jobs)
	}
	if _, ok := s.Job("live/cam"); ok {
		t.Fatal("Job after Stop")
	}
	if got := rec.states("live/cam"); !slices.Equal(got, []State{StateStarting, StateStopped}) {
		t.Fatalf("OnChange states %v", got)
	}
	// The source can be transcoded again.
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
}

func TestStopKillsFFmpegIgnoringSIGTERM(t *testing.T) {
	ffmpeg, dir := fakeFFmpeg(t, `trap '' TERM
touch "$DIR/ready"
exec sleep 600`)
	s := New(Config{FFmpeg: ffmpeg, Logger: quietLogger()})
	defer s.Close()
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "ready", func() bool { _, err := os.Stat(filepath.Join(dir, "ready")); return err == nil })
	st, _ := s.Job("live/cam")
	start := time.Now()
	s.Stop("live/cam")
	if d := time.Since(start); d < ffproc.StopTimeout {
		t.Errorf("Stop returned after %v, before SIGKILL was due", d)
	}
	if !processGone(st.PID) {
		t.Fatalf("ffmpeg %d still runs after Stop", st.PID)
	}
	if n := s.Running(); n != 0 {
		t.Fatalf("Running = %d", n)
	}
}

func TestRestartBackoffDoubles(t *testing.T) {
	ffmpeg, _ := fakeFFmpeg(t, `echo "rtmp://127.0.0.1:1935/live/cam: Connection refused" >&2
echo "Error opening input files: Connection refused" >&2
exit 1`)
	rec := newRecorder()
	const backoff = 50 * time.Millisecond
	s := New(Config{FFmpeg: ffmpeg, Backoff: backoff, OnChange: rec.onChange, Logger: quietLogger()})
	defer s.Close()
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "third restart", func() bool {
		st, _ := s.Job("live/cam")
		return st.Restarts >= 3
	})
	s.Stop("live/cam")
	changes := rec.of("live/cam")
	wantErr := "rtmp://127.0.0.1:1935/live/cam: Connection refused\nError opening input files: Connection refused\nffmpeg: exit status 1"
	var gaps []time.Duration
	for i, c := range changes {
		if c.State != StateRestarting {
			continue
		}
		if c.LastError != wantErr || c.PID != 0 {
			t.Fatalf("restarting status: %+v, want LastError %q", c.Status, wantErr)
		}
		if i+1 < len(changes) && changes[i+1].State == StateStarting {
			next := changes[i+1]
			if next.Restarts != c.Restarts+1 {
				t.Fatalf("restarts went from %d to %d", c.Restarts, next.Restarts)
			}
			gaps = append(gaps, next.at.Sub(c.at))
		}
	}
	if len(gaps) < 3 {
		t.Fatalf("%d restarts seen: %+v", len(gaps), changes)
	}
	for i, g := range gaps[:3] {
		if want := backoff << i; g < want {
			t.Errorf("restart %d after %v, want at least %v", i+1, g, want)
		}
	}
	if last := changes[len(changes)-1]; last.State != StateStopped || last.LastError != wantErr {
		t.Fatalf("final status %+v", last.Status)
	}
}

func TestBackoffResetsAfterStableRun(t *testing.T) {
	ffmpeg, _ := fakeFFmpeg(t, "sleep 0.15; exit 1")
	rec := newRecorder()
	const backoff = 200 * time.Millisecond
	s := New(Config{FFmpeg: ffmpeg, Backoff: backoff, OnChange: rec.onChange, Logger: quietLogger()})
	s.stableRun = 100 * time.Millisecond // every run counts as stable
	defer s.Close()
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "third restart", func() bool {
		st, _ := s.Job("live/cam")
		return st.Restarts >= 3
	})
	s.Stop("live/cam")
	changes := rec.of("live/cam")
	for i, c := range changes[:len(changes)-1] {
		if c.State != StateRestarting || changes[i+1].State != StateStarting {
			continue
		}
		// Doubling would wait 400 ms, then 800 ms.
		if g := changes[i+1].at.Sub(c.at); g < backoff || g > 3*backoff+backoff/2 {
			t.Errorf("restart %d after %v, want about %v", changes[i+1].Restarts, g, backoff)
		}
	}
}

func TestStderrBoundedAndBackoffCancelled(t *testing.T) {
	ffmpeg, _ := fakeFFmpeg(t, `i=0
while [ $i -lt 2000 ]; do echo "noise $i" >&2; i=$((i+1)); done
exit 3`)
	rec := newRecorder()
	s := New(Config{FFmpeg: ffmpeg, Backoff: time.Hour, OnChange: rec.onChange, Logger: quietLogger()})
	defer s.Close()
	if err := s.Start(testSpec("live/cam")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "restarting", func() bool { st, _ := s.Job("live/cam"); return st.State == StateRestarting })
	st, _ := s.Job("live/cam")
	const suffix = "noise 1999\nffmpeg: exit status 3"
	if len(st.LastError) > ffproc.StderrTail+len(suffix) || !strings.HasSuffix(st.LastError, suffix) || !strings.HasPrefix(st.LastError, "noise ") {
		t.Fatalf("LastError of %d bytes: %.80q...%q", len(st.LastError), st.LastError, st.LastError[max(0, len(st.LastError)-40):])
	}
	start := time.Now()
	s.Stop("live/cam") // during an hour's backoff
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Stop during backoff took %v", d)
	}
	if got := rec.states("live/cam"); !slices.Equal(got, []State{StateStarting, StateRestarting, StateStopped}) {
		t.Fatalf("OnChange states %v", got)
	}
}

func TestSourceEnded(t *testing.T) {
	for _, tc := range []struct {
		name, script, lastError string
	}{
		{"clean exit", "exit 0", ""},
		{"error exit", "echo 'live/cam: I/O error' >&2; exit 1", "live/cam: I/O error\nffmpeg: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ffmpeg, _ := fakeFFmpeg(t, tc.script)
			rec := newRecorder()
			s := New(Config{FFmpeg: ffmpeg, OnChange: rec.onChange, Logger: quietLogger()})
			defer s.Close()
			var asked atomic.Int32
			spec := testSpec("live/cam")
			spec.Alive = func() bool { asked.Add(1); return false }
			if err := s.Start(spec); err != nil {
				t.Fatal(err)
			}
			final := rec.waitStopped(t, 5*time.Second)
			if final.LastError != tc.lastError || final.Restarts != 0 {
				t.Fatalf("final status %+v, want LastError %q", final, tc.lastError)
			}
			if asked.Load() != 1 {
				t.Fatalf("Alive asked %d times", asked.Load())
			}
			if got := rec.states("live/cam"); !slices.Equal(got, []State{StateStarting, StateStopped}) {
				t.Fatalf("OnChange states %v", got)
			}
			waitFor(t, time.Second, "job removed", func() bool { return s.Running() == 0 })
			// A new publication of the source is transcoded again.
			if err := s.Start(spec); err != nil {
				t.Fatalf("Start after the source ended: %v", err)
			}
			rec.waitStopped(t, 5*time.Second)
		})
	}
}

func TestSourceEndsDuringBackoff(t *testing.T) {
	ffmpeg, _ := fakeFFmpeg(t, "exit 1")
	rec := newRecorder()
	s := New(Config{FFmpeg: ffmpeg, Backoff: 20 * time.Millisecond, OnChange: rec.onChange, Logger: quietLogger()})
	defer s.Close()
	var asked atomic.Int32
	spec := testSpec("live/cam")
	spec.Alive = func() bool { return asked.Add(1) == 1 } // live at the exit, gone after the backoff
	if err := s.Start(spec); err != nil {
		t.Fatal(err)
	}
	final := rec.waitStopped(t, 5*time.Second)
	if final.Restarts != 0 || asked.Load() != 2 {
		t.Fatalf("final %+v after %d questions", final, asked.Load())
	}
	if got := rec.states("live/cam"); !slices.Equal(got, []State{StateStarting, StateRestarting, StateStopped}) {
		t.Fatalf("OnChange states %v", got)
	}
}

func TestCloseStopsEveryJob(t *testing.T) {
	ffmpeg, _ := fakeFFmpeg(t, "exec sleep 600")
	rec := newRecorder()
	s := New(Config{FFmpeg: ffmpeg, OnChange: rec.onChange, Logger: quietLogger()})
	names := []streamname.Name{"live/a", "live/c", "live/b"}
	for _, n := range names {
		if err := s.Start(testSpec(n)); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for _, n := range names {
		waitFor(t, 5*time.Second, "ffmpeg of "+string(n), jobPID(s, n))
		st, _ := s.Job(n)
		pids = append(pids, st.PID)
	}
	var streams []string
	for _, st := range s.Jobs() {
		streams = append(streams, st.Stream)
	}
	if !slices.Equal(streams, []string{"live/a", "live/b", "live/c"}) {
		t.Fatalf("Jobs not sorted by stream: %v", streams)
	}
	s.Close()
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("ffmpeg %d still runs after Close", pid)
		}
	}
	if jobs := s.Jobs(); len(jobs) != 0 {
		t.Fatalf("Jobs after Close: %+v", jobs)
	}
	for _, n := range names {
		if got := rec.states(string(n)); len(got) == 0 || got[len(got)-1] != StateStopped {
			t.Errorf("%s: OnChange states %v", n, got)
		}
	}
}
