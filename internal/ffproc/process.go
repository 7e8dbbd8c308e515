// Package ffproc runs and supervises child processes, ffmpeg above all: a
// process group of its own, so that stopping it reaches whatever it
// started; SIGTERM, then SIGKILL after a timeout; the tail of its stderr;
// and the restart delay of a process that keeps failing.
package ffproc

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Restart timing and stopping.
const (
	// DefaultBackoff is the first restart delay of a Backoff without one.
	DefaultBackoff = time.Second
	// MaxBackoff caps the restart delay, which doubles after every run
	// shorter than StableRun.
	MaxBackoff = 30 * time.Second
	// StableRun is how long a process must have run for the next restart
	// delay to go back to the first.
	StableRun = 30 * time.Second
	// StopTimeout is how long Stop is usually given between SIGTERM and
	// SIGKILL.
	StopTimeout = 3 * time.Second
	// StderrTail is how many bytes of a process's stderr are kept.
	StderrTail = 4 << 10
)

// Process is one run of ffmpeg (or a script standing for it) in a
// process group of its own, so that stopping it reaches anything it
// started. Transcoding jobs run one; so do the WebRTC audio transcoders.
type Process struct {
	// Pid is the process's ID, and its group's.
	Pid int

	proc   *os.Process
	stderr *tailBuffer
	done   chan struct{} // closed once the process has been waited for
	err    error         // how it ended; set before done is closed
}

// Start starts path with args. stdin and stdout are handed to the
// process as they are (an *os.File needs no copying goroutine); nil is
// the null device. The last 4 KiB of its stderr are kept for Exit.
func Start(path string, args []string, stdin io.Reader, stdout io.Writer) (*Process, error) {
	p := &Process{stderr: &tailBuffer{max: StderrTail}, done: make(chan struct{})}
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, p.stderr
	cmd.SysProcAttr = groupAttr()
	// Wait returns this long after the process exits even if something it
	// left behind holds stderr open.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.Pid, p.proc = cmd.Process.Pid, cmd.Process
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Result returns, once Done is closed, how the process ended and the
// tail of its stderr.
func (p *Process) Result() (error, string) {
	<-p.done
	return p.err, p.stderr.String()
}

// Exit describes, once Done is closed, how the process ended: the tail
// of its stderr and its exit status.
func (p *Process) Exit() string {
	err, stderr := p.Result()
	return DescribeExit(err, stderr)
}

// Stop ends the process group unless the process has exited: SIGTERM,
// which lets ffmpeg finish its outputs, then SIGKILL after timeout (where
// there are no signals, the process is killed at once). It returns once
// the process has exited, and whether it had to be killed. The group
// exists as long as the process has not been waited for.
func (p *Process) Stop(timeout time.Duration) (killed bool) {
	select {
	case <-p.done:
		return false
	default:
	}
	stopGroup(p.proc, false)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
		stopGroup(p.proc, true)
		<-p.done
		return true
	}
}

// Backoff is the delay before a supervised process is started again: it
// starts at First, doubles after every run shorter than Stable up to
// MaxBackoff, and starts over after a run of at least Stable.
type Backoff struct {
	First  time.Duration // defaults to DefaultBackoff
	Stable time.Duration // defaults to StableRun
	next   time.Duration
}

// Next returns the delay before the next start of a process that ran
// for ran.
func (b *Backoff) Next(ran time.Duration) time.Duration {
	first, stable := b.First, b.Stable
	if first <= 0 {
		first = DefaultBackoff
	}
	if stable <= 0 {
		stable = StableRun
	}
	if b.next == 0 || ran >= stable {
		b.next = first
	}
	d := b.next
	b.next = min(2*b.next, MaxBackoff)
	return d
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max       int
	mu        sync.Mutex
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
		t.truncated = true
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[:copy(t.buf, t.buf[len(t.buf)-t.max:])]
		t.truncated = true
	}
	return n, nil
}

// String returns the whole lines kept: a line cut by the bound is dropped.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.buf)
	if t.truncated {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "?"))
}

// DescribeExit says how a process ended, for an operator: the tail of its
// stderr and its exit status.
func DescribeExit(err error, stderr string) string {
	switch {
	case err == nil && stderr == "":
		return "ffmpeg exited"
	case err == nil:
		return stderr
	case stderr == "":
		return "ffmpeg: " + err.Error()
	default:
		return stderr + "\nffmpeg: " + err.Error()
	}
}
