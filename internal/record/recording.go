package record

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/diskfull"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// flushInterval bounds how long written tags wait in memory: what a crash
// of the process may lose.
const flushInterval = time.Second

// bufferSize is a recording's write buffer: a few hundred milliseconds of
// a typical stream, so most flushes are one write.
const bufferSize = 64 << 10

// errPastEnd ends a stopped recording at the first packet of a later
// publisher session.
var errPastEnd = errors.New("past the end of the session")

// recording is one publisher session being written to a file.
type recording struct {
	r      *Recorder
	s      *stream.Stream
	rd     *stream.Reader
	name   streamname.Name
	sess   hub.Session // the publisher session recorded
	cancel context.CancelFunc

	// Packets at or before after were in the stream before the session
	// began (resumed: the stream had packets then).
	after   int64
	resumed bool

	mu      sync.Mutex
	stopped bool
	end     int64 // the session's last timestamp, once stopped
	hasEnd  bool
	path    string // the .part file, once created
	file    string // its name without extension

	bytes atomic.Int64
}

// stop ends the recording with the packets the stream holds of its
// session now.
func (rec *recording) stop() {
	rec.mu.Lock()
	if !rec.stopped {
		rec.stopped = true
		rec.end, rec.hasEnd = rec.s.LastDTS()
	}
	rec.mu.Unlock()
	rec.cancel()
}

// bound returns the session's last timestamp once the recording is
// stopped.
func (rec *recording) bound() (int64, bool) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.end, rec.hasEnd
}

func (rec *recording) info() Info {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return Info{Stream: rec.name, Session: rec.sess.ID, Path: rec.path, Name: rec.file, Bytes: rec.bytes.Load(), Started: rec.sess.Started}
}

// run writes the session to its file until the session or the stream
// ends, the recording is stopped or fails, then finishes the file. It
// returns the finished recording, or nil when no file was kept.
func (rec *recording) run(ctx context.Context) *Done {
	defer rec.cancel()
	defer rec.rd.Close()
	r := rec.r
	log := r.log.With("stream", rec.name, "session", rec.sess.ID)
	f, name, err := r.create(baseName(rec.name, rec.sess.Started))
	if err != nil {
		r.fail(reasonOf(err))
		if errno := diskfull.Errno(err); errno != "" {
			log.Error("recording not started: disk full", "dir", r.dir, "errno", errno, "err", err)
		} else {
			log.Error("recording not started", "err", err)
		}
		return nil
	}
	rec.mu.Lock()
	rec.path, rec.file = f.Name(), name
	rec.mu.Unlock()
	log.Info("recording started", "file", name+PartExt, "dir", r.dir)
	log = log.With("file", name+PartExt)

	w := &writer{f: f, bw: bufio.NewWriterSize(f, bufferSize), after: rec.after, skipOld: rec.resumed, lastFlush: time.Now(), count: rec.count}
	err = rec.copy(ctx, w)
	slow := errors.Is(err, stream.ErrSlowReader)
	werr := w.close()
	part := f.Name()
	// One line says why a recording failed: the copy's error, or the
	// final flush's when the copy ended well.
	cause := err
	if cause == nil {
		cause = werr
	}
	failed := cause != nil
	switch errno := diskfull.Errno(cause); {
	case cause == nil:
	case errno != "":
		// The stream and its viewers go on; the file keeps what fitted.
		log.Error("recording stopped: disk full", "path", part, "errno", errno, "err", cause)
	case slow:
		log.Warn("recording stopped early: the disk kept falling behind the stream", "err", cause)
	case err == nil:
		log.Error("recording not written in full", "err", cause)
	default:
		log.Error("recording stopped early", "err", cause)
	}
	if failed {
		r.fail(reasonOf(cause))
	}
	if !w.started {
		os.Remove(part)
		log.Info("recording ended without media: no file kept")
		return nil
	}
	bytes, dur := w.n, w.duration()
	if werr != nil || err != nil && !slow {
		// A failed write may have left a torn tag at the end.
		sc, rerr := repair(part)
		if rerr != nil {
			log.Error("recording lost", "err", rerr, "path", part)
			return nil
		}
		if sc.tags == 0 {
			os.Remove(part)
			log.Info("recording ended before its first complete tag: no file kept")
			return nil
		}
		bytes, dur = sc.size, sc.duration()
	}
	final, err := r.finish(name)
	if err != nil {
		if !failed {
			r.fail(reasonOf(err))
		}
		log.Error("recording not renamed: it stays a .part file until the next start", "err", err)
		return nil
	}
	log.Info("recording finished", "to", final+Ext, "bytes", bytes, "duration", dur)
	return &Done{
		Stream:     rec.name,
		Session:    rec.sess.ID,
		Protocol:   rec.sess.Protocol,
		RemoteAddr: rec.sess.RemoteAddr,
		Path:       filepath.Join(r.dir, final+Ext),
		Name:       final,
		Bytes:      bytes,
		Duration:   dur,
		Started:    rec.sess.Started,
		Ended:      time.Now().UTC(),
	}
}

// count adds n bytes written to the recording's and the Recorder's totals.
func (rec *recording) count(n int) {
	rec.bytes.Add(int64(n))
	rec.r.bytes.Add(uint64(n))
}

// copy writes the stream's packets to w until the stream ends (nil), the
// recording is stopped and has written what the stream holds of its
// session (nil), or an error.
func (rec *recording) copy(ctx context.Context, w *writer) error {
	var pkts []*media.Packet
	for {
		rctx, cancel := ctx, context.CancelFunc(nil)
		if w.unflushed {
			// Wake up to flush what waits in the buffer when the stream
			// goes quiet.
			rctx, cancel = context.WithDeadline(ctx, w.lastFlush.Add(flushInterval))
		}
		var err error
		pkts, err = rec.rd.ReadPackets(rctx, pkts[:0])
		if cancel != nil {
			cancel()
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, stream.ErrShutdown):
			return nil // the stream ended, or ends here with the node
		case ctx.Err() != nil:
			return nil // stopped, and everything logged is written
		case errors.Is(err, context.DeadlineExceeded):
			if err := w.flush(); err != nil {
				return err
			}
			continue
		default:
			return err
		}
		end, hasEnd := rec.bound()
		for _, p := range pkts {
			if hasEnd && p.DTS > end {
				return nil // the next session's: the stop came before this
			}
			if err := w.write(p); err != nil {
				return err
			}
		}
		clear(pkts) // the packets are the stream's: do not hold them
		if w.flushDue() {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
}

// Config slots of a writer.
const (
	cfgMeta = iota
	cfgVideo
	cfgAudio
)

// writer writes packets as FLV tags, with timestamps from 0.
type writer struct {
	f     *os.File
	bw    *bufio.Writer
	buf   []byte
	count func(int)

	after   int64 // packets at or before after are the last session's
	skipOld bool

	started bool
	base    int64            // the first frame's timestamp, time 0 in the file
	cfg     [3]*media.Packet // configuration waiting for the first frame
	last    int64            // the highest timestamp written, in file time
	n       int64            // bytes written

	lastFlush time.Time
	unflushed bool // tags wait in the buffer
	key       bool // a keyframe waits in the buffer
}

// write writes p. Configuration (metadata, sequence headers) waits for
// the first frame of the session, which becomes time 0 in the file.
func (w *writer) write(p *media.Packet) error {
	if flv.TagSize(p) == 0 {
		return nil
	}
	isCfg := p.SeqHeader || p.Kind == media.KindData
	if !w.started {
		if isCfg {
			switch {
			case p.Kind == media.KindData:
				w.cfg[cfgMeta] = p
			case p.Kind == media.KindVideo:
				w.cfg[cfgVideo] = p
			default:
				w.cfg[cfgAudio] = p
			}
			return nil
		}
		if w.skipOld && p.DTS <= w.after {
			return nil // the last session's: recorded in its own file
		}
		w.started, w.base = true, p.DTS
		hasVideo := p.Kind == media.KindVideo || w.cfg[cfgVideo] != nil
		hasAudio := p.Kind == media.KindAudio || w.cfg[cfgAudio] != nil
		w.buf = flv.AppendHeader(w.buf[:0], hasVideo, hasAudio)
		if err := w.put(); err != nil {
			return err
		}
		for i, c := range w.cfg {
			if c != nil {
				if err := w.tag(c); err != nil {
					return err
				}
				w.cfg[i] = nil
			}
		}
	}
	if p.Kind == media.KindVideo && p.Keyframe {
		w.key = true
	}
	return w.tag(p)
}

// tag writes p's tag with its timestamp made relative to the first frame.
// Configuration stamped earlier, and audio a few milliseconds ahead of the
// first frame, are written at 0: FLV has no negative timestamps.
func (w *writer) tag(p *media.Packet) error {
	q := *p
	q.DTS = max(p.DTS-w.base, 0)
	w.last = max(w.last, q.DTS)
	w.buf = flv.AppendTag(w.buf[:0], &q)
	return w.put()
}

func (w *writer) put() error {
	n, err := w.bw.Write(w.buf)
	w.n += int64(n)
	w.count(n)
	w.unflushed = true
	if err != nil {
		return fmt.Errorf("record: write: %w", err)
	}
	return nil
}

// flushDue reports whether a keyframe waits in the buffer or the last
// flush is a second old.
func (w *writer) flushDue() bool {
	return w.unflushed && (w.key || time.Since(w.lastFlush) >= flushInterval)
}

// flush hands what the buffer holds to the operating system: from then
// on it survives a crash of the process.
func (w *writer) flush() error {
	w.lastFlush, w.unflushed, w.key = time.Now(), false, false
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("record: write: %w", err)
	}
	return nil
}

// close flushes, syncs and closes the file.
func (w *writer) close() error {
	err := w.flush()
	if err == nil {
		if serr := w.f.Sync(); serr != nil {
			err = fmt.Errorf("record: sync: %w", serr)
		}
	}
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("record: close: %w", cerr)
	}
	return err
}

// duration is the media time from the first tag to the last.
func (w *writer) duration() time.Duration {
	return time.Duration(w.last) * time.Millisecond
}
