package transcode

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sort"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/ffproc"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Sentinel errors of Start.
var (
	ErrFull    = errors.New("transcode: the node runs as many transcoding jobs as it may")
	ErrRunning = errors.New("transcode: the stream is already transcoded")
	ErrClosed  = errors.New("transcode: supervisor closed")
)

// Config configures a Supervisor.
type Config struct {
	FFmpeg   string        // path to ffmpeg; defaults to "ffmpeg", looked up in PATH
	Max      int           // jobs at once on this node; <= 0 means no limit
	Backoff  time.Duration // first restart delay; defaults to 1s; doubles up to ffproc.MaxBackoff, back to Backoff after a run of ffproc.StableRun
	Logger   *slog.Logger  // defaults to slog.Default()
	OnChange func(Status)  // called on every state change of a job, in order, from the job's goroutine; may be nil; must not block long nor call Stop or Close
}

// Spec describes one job: which source to transcode into which renditions.
type Spec struct {
	Source     streamname.Name
	Input      string                       // URL ffmpeg reads the source from, e.g. rtmp://127.0.0.1:1935/live/cam
	OutputURL  func(streamname.Name) string // URL to publish the rendition stream of that name to
	Renditions []Rendition                  // already fitted; at least one
	Alive      func() bool                  // whether the source is still live; asked before every restart; nil means always
}

// State is where a job is in its life.
type State string

// The states of a job.
const (
	StateStarting   State = "starting"   // ffmpeg started, no progress yet
	StateRunning    State = "running"    // ffmpeg reports progress
	StateRestarting State = "restarting" // ffmpeg exited; waiting for the backoff before starting again
	StateStopped    State = "stopped"    // for good: Stop, Close, or the source ended
)

// Status is a snapshot of a job, for the API and OnChange.
type Status struct {
	Stream     string    `json:"stream"`
	State      State     `json:"state"`
	Renditions []string  `json:"renditions"` // the rendition stream names
	Restarts   int       `json:"restarts"`
	FPS        float64   `json:"fps"`   // from ffmpeg -progress
	Speed      float64   `json:"speed"` // 1.0 = real time
	PID        int       `json:"pid,omitempty"`
	Started    time.Time `json:"started"`              // when the job (not this process) started
	LastError  string    `json:"last_error,omitempty"` // last lines of ffmpeg's stderr (at most 4 KiB) and its exit status at its last unexpected or failed exit
}

// Supervisor runs one ffmpeg process per transcoded source stream and
// restarts it when it exits while the source is live.
type Supervisor struct {
	cfg       Config
	log       *slog.Logger
	stableRun time.Duration // ffproc.StableRun; shorter in tests

	mu     sync.Mutex
	jobs   map[streamname.Name]*job
	closed bool
	wg     sync.WaitGroup // one per job goroutine
}

// New returns a Supervisor with cfg's defaults filled in. It starts
// nothing.
func New(cfg Config) *Supervisor {
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = ffproc.DefaultBackoff
	}
	if cfg.Backoff > ffproc.MaxBackoff {
		cfg.Backoff = ffproc.MaxBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Supervisor{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "transcode"),
		stableRun: ffproc.StableRun,
		jobs:      make(map[streamname.Name]*job),
	}
}

// Start validates spec and starts its job in a goroutine of its own; it
// returns at once. It fails with ErrRunning when the source has a job,
// ErrFull when Max jobs run, and ErrClosed after Close.
func (s *Supervisor) Start(spec Spec) error {
	if _, err := streamname.Parse(string(spec.Source)); err != nil {
		return fmt.Errorf("transcode: source: %w", err)
	}
	if spec.Input == "" {
		return fmt.Errorf("transcode: %s: no input URL", spec.Source)
	}
	if spec.OutputURL == nil {
		return fmt.Errorf("transcode: %s: no output URL function", spec.Source)
	}
	if len(spec.Renditions) == 0 {
		return fmt.Errorf("transcode: %s: no renditions", spec.Source)
	}
	if err := ValidateLadder(spec.Renditions); err != nil {
		return fmt.Errorf("transcode: %s: %w", spec.Source, err)
	}
	outputs := make([]Output, len(spec.Renditions))
	names := make([]string, len(spec.Renditions))
	for i, r := range spec.Renditions {
		n, err := RenditionName(spec.Source, r)
		if err != nil {
			return err
		}
		outputs[i] = Output{Rendition: r, URL: spec.OutputURL(n)}
		names[i] = string(n)
	}
	ffmpeg, err := exec.LookPath(s.cfg.FFmpeg)
	if err != nil {
		return fmt.Errorf("transcode: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.jobs[spec.Source] != nil:
		return fmt.Errorf("%w: %s", ErrRunning, spec.Source)
	case s.cfg.Max > 0 && len(s.jobs) >= s.cfg.Max:
		return fmt.Errorf("%w: %d", ErrFull, s.cfg.Max)
	}
	j := &job{
		s:      s,
		spec:   spec,
		ffmpeg: ffmpeg,
		args:   Args(spec.Input, outputs),
		log:    s.log.With("stream", string(spec.Source)),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		st: Status{
			Stream:     string(spec.Source),
			State:      StateStarting,
			Renditions: names,
			Started:    time.Now(),
		},
	}
	s.jobs[spec.Source] = j
	s.wg.Add(1)
	go j.run()
	return nil
}

// Stop ends the job of source name, if any: SIGTERM to ffmpeg's process
// group, SIGKILL after StopTimeout. It returns when the job is gone.
func (s *Supervisor) Stop(name streamname.Name) {
	s.mu.Lock()
	j := s.jobs[name]
	s.mu.Unlock()
	if j == nil {
		return
	}
	j.cancel()
	<-j.done
}

// Jobs returns the status of every current job, sorted by stream.
func (s *Supervisor) Jobs() []Status {
	s.mu.Lock()
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	out := make([]Status, len(jobs))
	for i, j := range jobs {
		out[i] = j.status()
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Stream < out[b].Stream })
	return out
}

// Job returns the status of the job of source name.
func (s *Supervisor) Job(name streamname.Name) (Status, bool) {
	s.mu.Lock()
	j := s.jobs[name]
	s.mu.Unlock()
	if j == nil {
		return Status{}, false
	}
	return j.status(), true
}

// Running returns the number of jobs counted against Max: all jobs that
// have not stopped for good, restarting ones included.
func (s *Supervisor) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

// Close stops every job and waits for them; Start fails afterwards.
func (s *Supervisor) Close() {
	s.mu.Lock()
	s.closed = true
	for _, j := range s.jobs {
		j.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// remove forgets j once it has stopped for good.
func (s *Supervisor) remove(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs[j.spec.Source] == j {
		delete(s.jobs, j.spec.Source)
	}
}
