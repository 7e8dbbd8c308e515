package transcode

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/ffproc"
)

// Bounds on what is kept of ffmpeg's output.
const (
	maxProgressLine = 1 << 10 // -progress lines are short key=value pairs
)

// job is one source's ffmpeg, run and restarted by its own goroutine
// (run), which owns the process; the progress reader only updates st.
type job struct {
	s        *Supervisor
	spec     Spec
	ffmpeg   string
	args     []string
	log      *slog.Logger
	stop     chan struct{} // closed by cancel: Stop or Close
	stopOnce sync.Once
	done     chan struct{} // closed when run returns

	mu sync.Mutex
	st Status
}

func (j *job) cancel() { j.stopOnce.Do(func() { close(j.stop) }) }

func (j *job) stopped() bool {
	select {
	case <-j.stop:
		return true
	default:
		return false
	}
}

func (j *job) alive() bool { return j.spec.Alive == nil || j.spec.Alive() }

func (j *job) status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	st.Renditions = slices.Clone(st.Renditions)
	return st
}

// change moves the job to state, with update applied to its status, and
// tells OnChange. Only run's goroutine calls it, and the progress reader
// while run waits for it, so OnChange sees the changes in order.
func (j *job) change(state State, update func(*Status)) {
	j.mu.Lock()
	j.st.State = state
	if update != nil {
		update(&j.st)
	}
	st := j.st
	st.Renditions = slices.Clone(st.Renditions)
	j.mu.Unlock()
	if j.s.cfg.OnChange != nil {
		j.s.cfg.OnChange(st)
	}
}

// run starts ffmpeg and starts it again whenever it exits while the job
// is not stopped and the source is live.
func (j *job) run() {
	defer j.s.wg.Done()
	defer close(j.done)
	j.log.Info("transcoding started", "renditions", j.status().Renditions)
	j.log.Debug("ffmpeg command", "path", j.ffmpeg, "args", j.args)
	backoff := ffproc.Backoff{First: j.s.cfg.Backoff, Stable: j.s.stableRun}
	restarts := 0
	for {
		if j.stopped() {
			j.finish("stopped", "")
			return
		}
		ran, err, stderr := j.runOnce(restarts)
		if j.stopped() {
			j.finish("stopped", "")
			return
		}
		lastErr := ffproc.DescribeExit(err, stderr)
		if !j.alive() {
			// An error exit still says why the output ended early.
			if err == nil {
				lastErr = ""
			}
			j.finish("source ended", lastErr)
			return
		}
		delay := backoff.Next(ran)
		j.log.Warn("ffmpeg exited; restarting", "error", err, "ran", ran.Round(time.Millisecond),
			"in", delay, "stderr", lastLine(stderr))
		j.change(StateRestarting, func(st *Status) {
			st.PID, st.FPS, st.Speed, st.LastError = 0, 0, 0, lastErr
		})
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-j.stop:
			t.Stop()
			j.finish("stopped", "")
			return
		}
		if !j.alive() {
			j.finish("source ended", "")
			return
		}
		restarts++
	}
}

// finish reports the job stopped for good and forgets it, in that order,
// so a job started again for the same source reports after this one.
// A lastErr other than "" becomes Status.LastError.
func (j *job) finish(reason, lastErr string) {
	if lastErr != "" {
		j.log.Info("transcoding stopped", "reason", reason, "stderr", lastLine(lastErr))
	} else {
		j.log.Info("transcoding stopped", "reason", reason)
	}
	j.change(StateStopped, func(st *Status) {
		st.PID, st.FPS, st.Speed = 0, 0, 0
		if lastErr != "" {
			st.LastError = lastErr
		}
	})
	j.s.remove(j)
}

// runOnce runs ffmpeg until it exits, stopping it if the job is stopped,
// and returns how long it ran, how it ended and the tail of its stderr.
func (j *job) runOnce(restarts int) (time.Duration, error, string) {
	pr, pw, err := os.Pipe()
	if err != nil {
		j.change(StateStarting, func(st *Status) { st.Restarts = restarts })
		return 0, err, ""
	}
	defer pr.Close()
	start := time.Now()
	// stdout is a file: ffmpeg writes its progress to it directly.
	proc, err := ffproc.Start(j.ffmpeg, j.args, nil, pw)
	pw.Close()
	if err != nil {
		j.change(StateStarting, func(st *Status) { st.Restarts = restarts })
		return 0, err, ""
	}
	j.log.Info("ffmpeg started", "pid", proc.Pid, "restarts", restarts)
	j.change(StateStarting, func(st *Status) { st.PID, st.Restarts = proc.Pid, restarts })

	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		j.readProgress(pr)
	}()
	select {
	case <-proc.Done():
	case <-j.stop:
		if proc.Stop(ffproc.StopTimeout) {
			j.log.Warn("ffmpeg ignored SIGTERM; killed it", "pid", proc.Pid, "after", ffproc.StopTimeout)
		}
	}
	// ffmpeg is gone, so stdout is at its end unless something ffmpeg
	// started still holds it.
	pr.SetReadDeadline(time.Now().Add(time.Second))
	<-progressDone
	err, stderr := proc.Result()
	return time.Since(start), err, stderr
}

// progress is one block of ffmpeg's -progress output.
type progress struct {
	frame int64
	fps   float64
	speed float64
}

// readProgress follows ffmpeg's -progress key=value lines; each block
// ends with progress=continue or progress=end.
func (j *job) readProgress(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxProgressLine)
	var p progress
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch key {
		case "frame":
			p.frame, _ = strconv.ParseInt(val, 10, 64)
		case "fps":
			p.fps = parseFloat(val)
		case "speed":
			p.speed = parseFloat(strings.TrimSuffix(strings.TrimSpace(val), "x"))
		case "progress":
			j.onProgress(p)
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		j.log.Warn("ffmpeg progress line too long; ignoring progress")
		io.Copy(io.Discard, r) // so ffmpeg never blocks on a full pipe
	}
}

// onProgress records a progress block; the first with a frame out means
// ffmpeg is running.
func (j *job) onProgress(p progress) {
	j.mu.Lock()
	j.st.FPS, j.st.Speed = p.fps, p.speed
	toRunning := j.st.State == StateStarting && p.frame > 0
	j.mu.Unlock()
	if toRunning {
		j.log.Info("ffmpeg running", "frame", p.frame)
		j.change(StateRunning, nil)
	}
}

// parseFloat reads a -progress number; "N/A" and garbage read as 0.
func parseFloat(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0
	}
	return f
}

// lastLine is the last line of s, for a log line.
func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
