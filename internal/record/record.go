// Package record writes the streams published to a node to FLV files, as
// nginx-rtmp's "record all" does: one file per publisher session, named
// APP-STREAM-YYYYMMDD-HHMMSS.flv after the session's start (UTC).
//
// A file is written as NAME.flv.part and renamed to NAME.flv once the
// publisher has left and the file is synced, so only finished recordings
// carry the .flv name. FLV is streamable: a file cut anywhere plays up to
// its last complete tag, and writes are flushed at every keyframe and at
// least every second, so a crash loses about a second. A .part file left
// by a crash is cut to its last complete tag and renamed when the next
// Recorder starts on the directory.
package record

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/diskfull"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// File name suffixes.
const (
	// Ext ends the name of a finished recording.
	Ext = ".flv"
	// PartExt ends the name of a recording being written, or left by a
	// crash.
	PartExt = ".flv.part"
)

// timeLayout is the start time in file names, in UTC.
const timeLayout = "20060102-150405"

// Hub is what a Recorder needs of the node's stream table: its session
// events, and the streams to read.
type Hub interface {
	// Subscribe registers f to be called on every event of the hub.
	Subscribe(f func(hub.Event))
	// Get returns the named stream on this node, or nil.
	Get(name streamname.Name) *stream.Stream
}

var _ Hub = (*hub.Hub)(nil)

// Config configures a Recorder.
type Config struct {
	// Dir is the directory of recordings; New creates it (0o755).
	// Required.
	Dir string
	// Enabled reports whether the streams of app are recorded. Nil
	// records nothing: the Recorder only recovers what a crash left.
	Enabled func(app string) bool
	// Hub is the node's stream table: every publisher session starting on
	// it, for an app Enabled, is recorded. Nil records nothing.
	Hub Hub
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnDone, if set, is called once with every finished recording,
	// including those recovered by New. It must not block for long.
	OnDone func(Done)
}

// Done describes a finished recording.
type Done struct {
	// Stream is the stream recorded; empty for a file recovered after a
	// crash (its name tells APP-STREAM, but both may hold dashes).
	Stream streamname.Name
	// Session is the ID of the publisher session recorded, Protocol and
	// RemoteAddr its publisher's; empty for a recovered file.
	Session    string
	Protocol   string
	RemoteAddr string
	// Path is the absolute path of the .flv file.
	Path string
	// Name is the file's base name without .flv.
	Name string
	// Bytes is the file's size.
	Bytes int64
	// Duration is the media time from the first tag to the last.
	Duration time.Duration
	// Started is when the publisher session began; Ended, when the file
	// was finished.
	Started, Ended time.Time
	// Recovered tells a file left by a crash and recovered by New.
	Recovered bool
}

// Info describes a recording being written.
type Info struct {
	Stream  streamname.Name
	Session string
	// Path is the file being written (ending in .flv.part); empty until
	// the file is created.
	Path string
	// Name is the file's base name without .flv; empty until the file is
	// created.
	Name    string
	Bytes   int64 // written so far
	Started time.Time
}

// Stats are a Recorder's counters, for metrics.
type Stats struct {
	Active   int    // recordings being written
	Bytes    uint64 // bytes written to recordings, all together
	Finished uint64 // recordings finished, recovered ones included
	Failed   uint64 // recordings ended early by an error, all reasons together
	// FailedBy counts the failed recordings by reason.
	FailedBy map[Reason]uint64
}

// Reason is why a recording failed, the reason label of
// meshcast_recordings_failed_total.
type Reason string

// Reasons a recording fails.
const (
	// ReasonDiskFull: the file system refused to grow the file (ENOSPC,
	// EDQUOT, or EFBIG past RLIMIT_FSIZE). The file keeps every complete
	// tag written before.
	ReasonDiskFull Reason = "disk_full"
	// ReasonSlowDisk: the disk kept falling behind the stream.
	ReasonSlowDisk Reason = "slow_disk"
	// ReasonIOError: any other error creating, writing or renaming the
	// file.
	ReasonIOError Reason = "io_error"
)

// Reasons lists every Reason, in the order metrics show them.
var Reasons = []Reason{ReasonDiskFull, ReasonSlowDisk, ReasonIOError}

// reasonOf classifies the error that ended a recording.
func reasonOf(err error) Reason {
	switch {
	case diskfull.Is(err):
		return ReasonDiskFull
	case errors.Is(err, stream.ErrSlowReader):
		return ReasonSlowDisk
	}
	return ReasonIOError
}

// Recorder records the streams published to a node.
type Recorder struct {
	cfg Config
	dir string // absolute
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	active map[string]*recording // by publisher session ID
	wg     sync.WaitGroup

	// names serializes choosing file names and renaming, so two
	// recordings never take one name.
	names sync.Mutex

	bytes, finished atomic.Uint64
	failed          [3]atomic.Uint64 // by reason, indexed as Reasons
}

// New creates the directory, recovers the .part files a crash left in it
// (each reported to OnDone) and starts recording the publisher sessions
// of the hub.
func New(cfg Config) (*Recorder, error) {
	if cfg.Dir == "" {
		return nil, errors.New("record: no directory")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Recorder{
		cfg:    cfg,
		dir:    dir,
		log:    cfg.Logger.With("component", "record"),
		active: make(map[string]*recording),
	}
	if err := r.recoverAll(); err != nil {
		return nil, err
	}
	if cfg.Hub != nil {
		cfg.Hub.Subscribe(r.event)
	}
	return r, nil
}

// Dir returns the absolute path of the directory of recordings.
func (r *Recorder) Dir() string { return r.dir }

// event starts and stops recordings with the publisher sessions.
func (r *Recorder) event(ev hub.Event) {
	if ev.Session.Kind != hub.KindPublish {
		return
	}
	switch ev.Type {
	case hub.EventSessionStart:
		if r.cfg.Enabled != nil && r.cfg.Enabled(ev.Name.App()) {
			r.start(ev.Session)
		}
	case hub.EventSessionEnd:
		r.stop(ev.Session.ID)
	}
}

// start records the publisher session sess. It runs in the publisher's
// goroutine as its session starts, before it has sent anything: the
// reader attaches here so that no packet is missed, and everything else
// happens in the recording's own goroutine.
func (r *Recorder) start(sess hub.Session) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return
	}
	s := r.cfg.Hub.Get(sess.Stream)
	if s == nil {
		return // gone already
	}
	// A stream resumed by a new publisher still holds the end of the last
	// session, which that session's recording has: start after it.
	after, resumed := s.LastDTS()
	rd, err := s.NewReader(hub.RecordProtocol)
	if err != nil {
		return // ended already
	}
	rd.KeepAll()
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recording{
		r:       r,
		s:       s,
		rd:      rd,
		name:    sess.Stream,
		sess:    sess,
		cancel:  cancel,
		after:   after,
		resumed: resumed,
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		rd.Close()
		return
	}
	if old := r.active[sess.ID]; old != nil {
		old.stop() // cannot happen: session IDs are unique
	}
	r.active[sess.ID] = rec
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		d := rec.run(ctx)
		r.mu.Lock()
		if r.active[sess.ID] == rec {
			delete(r.active, sess.ID)
		}
		r.mu.Unlock()
		if d != nil {
			r.done(*d) // no longer active once reported
		}
	}()
}

// stop ends the recording of the publisher session id, if any: it writes
// what the stream holds of the session and finishes the file.
func (r *Recorder) stop(id string) {
	r.mu.Lock()
	rec := r.active[id]
	r.mu.Unlock()
	if rec != nil {
		rec.stop()
	}
}

// Active lists the recordings being written, oldest first.
func (r *Recorder) Active() []Info {
	r.mu.Lock()
	out := make([]Info, 0, len(r.active))
	for _, rec := range r.active {
		out = append(out, rec.info())
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.Session, b.Session)
	})
	return out
}

// Stats returns the Recorder's counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	n := len(r.active)
	r.mu.Unlock()
	st := Stats{Active: n, Bytes: r.bytes.Load(), Finished: r.finished.Load(), FailedBy: make(map[Reason]uint64, len(Reasons))}
	for i, reason := range Reasons {
		v := r.failed[i].Load()
		st.FailedBy[reason] = v
		st.Failed += v
	}
	return st
}

// fail counts a failed recording.
func (r *Recorder) fail(reason Reason) {
	for i, x := range Reasons {
		if x == reason {
			r.failed[i].Add(1)
			return
		}
	}
	r.failed[len(r.failed)-1].Add(1)
}

// Close stops every recording, finishes their files and waits. Nothing
// is recorded after it.
func (r *Recorder) Close() {
	r.mu.Lock()
	r.closed = true
	recs := make([]*recording, 0, len(r.active))
	for _, rec := range r.active {
		recs = append(recs, rec)
	}
	r.mu.Unlock()
	for _, rec := range recs {
		rec.stop()
	}
	r.wg.Wait()
}

// done counts and reports a finished recording.
func (r *Recorder) done(d Done) {
	r.finished.Add(1)
	if r.cfg.OnDone != nil {
		r.cfg.OnDone(d)
	}
}

// baseName is the file name of a recording of name started at t, without
// extension: APP-STREAM-YYYYMMDD-HHMMSS, with any byte outside
// [A-Za-z0-9_.-] replaced by '_'.
func baseName(name streamname.Name, t time.Time) string {
	s := name.App() + "-" + name.Stream() + "-" + t.UTC().Format(timeLayout)
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			return c
		}
		return '_'
	}, s)
}

// create makes the .part file of a new recording named after base, or
// base-2, base-3... when a recording (finished or not) has that name.
func (r *Recorder) create(base string) (f *os.File, name string, err error) {
	r.names.Lock()
	defer r.names.Unlock()
	for n := 1; n < 10000; n++ {
		name = base
		if n > 1 {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		if exists(filepath.Join(r.dir, name+Ext)) {
			continue
		}
		f, err = os.OpenFile(filepath.Join(r.dir, name+PartExt), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, name, err
	}
	return nil, "", fmt.Errorf("record: no free name for %s", base)
}

// finish renames the .part file of recording name to its .flv name, or to
// a free variant if that was taken meanwhile; it returns the name given.
func (r *Recorder) finish(name string) (string, error) {
	r.names.Lock()
	defer r.names.Unlock()
	part := filepath.Join(r.dir, name+PartExt)
	final := name
	if exists(filepath.Join(r.dir, final+Ext)) {
		for n := 2; ; n++ {
			final = fmt.Sprintf("%s-%d", name, n)
			if !exists(filepath.Join(r.dir, final+Ext)) && !exists(filepath.Join(r.dir, final+PartExt)) {
				break
			}
		}
	}
	if err := os.Rename(part, filepath.Join(r.dir, final+Ext)); err != nil {
		return "", fmt.Errorf("record: %w", err)
	}
	syncDir(r.dir)
	return final, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// syncDir makes a rename in dir durable. Failing, it costs only
// durability across a power loss, so errors are ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
