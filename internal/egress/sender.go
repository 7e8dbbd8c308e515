// Package egress writes live streams to viewers' sockets: a few sender
// workers serve every RTMP and HTTP-FLV viewer of the node, writing each
// one's next batch from its stream.Reader in one non-blocking system call,
// and streams' wire files (in-memory files behind stream.Spool) let a large
// batch go out with sendfile. The fan-out core (package stream) knows
// nothing of sockets or the operating system: it hands readers' batches out
// through Reader.Poll and Reader.Encode and fills the spools this package
// gives it. Everything that touches the system is in the build-tagged pair
// sock_linux64.go and sock_other.go; elsewhere than 64-bit Linux every
// viewer is pumped from a goroutine of its own.
package egress

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/rawio"
	"github.com/meshcast/meshcast/internal/stream"
)

// ErrHungUp ends a viewer whose peer closed the connection.
var ErrHungUp = errors.New("viewer hung up")

// A Sender writes readers' packets to their connections from a few
// goroutines, one per processor the Go runtime uses, instead of one
// goroutine per viewer. Each worker walks its viewers and hands every one
// the bytes it has not sent yet in one non-blocking vectored write, so a
// packet costs a viewer a system call and no goroutine switch:
//
//   - Viewers with a merge window sit on a timing wheel of tickLen slots
//     and are written once per window. Their phases spread over the window
//     as they join, so a worker wakes every few milliseconds for a slice of
//     its viewers instead of once per viewer.
//   - Viewers in the low-latency mode (no window), and viewers still
//     catching up after joining, are written whenever their stream has new
//     packets: the stream wakes each worker once per packet, not each viewer.
//   - A write the socket cannot take whole moves that viewer to a goroutine
//     of its own, which finishes it with a deadline (WriteTimeout) and
//     returns the viewer to its worker. One slow viewer never delays another.
//   - The worker owns the socket's read side too: about once a second it
//     reads, without blocking, and discards what the viewer has sent, and it
//     ends the viewer when the peer has hung up. A viewer therefore costs no
//     goroutine (and no goroutine stack) while it plays.
//
// A connection that is not a bare socket (TLS) cannot be written that way:
// it costs two goroutines, one writing and one reading.
type Sender struct {
	workers  []*sendWorker
	next     atomic.Uint32
	sent     atomic.Uint64 // bytes written to viewers
	fromFile atomic.Uint64 // of which sent from streams' wire files
	wg       sync.WaitGroup
	ctx      context.Context // ends with Close
	cancel   context.CancelFunc
}

// tickLen is the timing wheel's resolution: writes of viewers with a merge
// window are late by at most this much.
const tickLen = 5 * time.Millisecond

// wheelSlots spans the largest merge window (1 s) with room to spare.
const wheelSlots = 256

// catchUpDelay is how long a viewer whose first picture left with the
// answer to its play request waits for the rest of its GOP. In a burst of
// joins the server then answers the plays queued behind that one before it
// spends the burst's CPU on catching up: during a burst of 1000 joins the
// time from a play's arrival to its first picture went from 27-29 to 14-18
// ms at p99 (bench/ttff-split.sh). The player has its first picture by
// then, and the next frame is not due before the rest arrives.
const catchUpDelay = 20 * time.Millisecond

// readEvery is how often a viewer's socket is read: what players send after
// they start playing (acknowledgements, buffer-length notes) needs no answer,
// and a hang-up shows sooner still as a failed write.
const readEvery = 2 * time.Second

// NewSender starts a sender with n workers; n <= 0 means GOMAXPROCS.
func NewSender(n int) *Sender {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{ctx: ctx, cancel: cancel}
	for range n {
		w := &sendWorker{
			sent:     &s.sent,
			fromFile: &s.fromFile,
			wake:     make(chan struct{}, 1),
			start:    time.Now(),
			watched:  make(map[*stream.Stream]int),
			io:       newSockIO(),
		}
		s.workers = append(s.workers, w)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.run(ctx)
		}()
	}
	return s
}

// BytesSent returns the bytes written to viewers so far.
func (s *Sender) BytesSent() uint64 { return s.sent.Load() }

// Count adds n bytes written to a viewer outside the sender (another
// node's pull, written from a goroutine of its own) to BytesSent.
func (s *Sender) Count(n int64) {
	if n > 0 {
		s.sent.Add(uint64(n))
	}
}

// Close stops the workers. Viewers still attached end with
// context.Canceled; Close returns once every worker has stopped.
func (s *Sender) Close() {
	s.cancel()
	s.wg.Wait()
}

// Send starts writing r's stream to conn in format f. done is called once,
// on a goroutine of its own, with why sending ended: io.EOF when the stream
// ended, stream.ErrSlowReader, ErrHungUp when the viewer closed the connection, a write
// error, or context.Canceled after stop, ctx's end or Close. Until done is
// called the sender owns conn: the caller neither reads nor writes it, and
// anything the viewer sends is read and discarded. r is not closed.
func (s *Sender) Send(ctx context.Context, r *stream.Reader, f *stream.Format, conn net.Conn, cfg stream.PumpConfig, done func(error)) (stop func()) {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if tc, ok := conn.(interface{ SetNoDelay(bool) error }); ok && cfg.Nagle {
		tc.SetNoDelay(false)
	}
	sk, ok := sockOf(conn)
	if !ok {
		// Not a socket this platform can write without blocking (a TLS
		// connection, say): pump from a goroutine of its own.
		return s.pumpConn(ctx, r, f, conn, cfg, done)
	}
	r.Stream().UseSpool(f, openWireFile)
	w := s.workers[int(s.next.Add(1))%len(s.workers)]
	// What a player sends right after asking to play waits in the socket
	// for the first regular read: a joining viewer's first write costs no
	// read, which counts during a burst of joins.
	// A reader no longer joining has had its first picture from Ready,
	// sent with the answer to the play: its catch-up is held.
	j := &sendJob{r: r, f: f, conn: conn, sock: sk, cfg: cfg, done: done, w: w, readAt: time.Now().Add(readEvery), hold: !r.Joining()}
	j.unhook = context.AfterFunc(ctx, j.stop)
	w.enqueue(j)
	return j.stop
}

// pumpConn is Send for a connection without a raw socket: one goroutine
// pumps the stream to conn while another reads and drops what the viewer
// sends, and ends the pump with ErrHungUp when the viewer hangs up.
func (s *Sender) pumpConn(ctx context.Context, r *stream.Reader, f *stream.Format, conn net.Conn, cfg stream.PumpConfig, done func(error)) (stop func()) {
	pctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(s.ctx, func() { cancel(context.Canceled) })
	if sent := cfg.Sent; sent != nil {
		cfg.Sent = func(n int64) { s.sent.Add(uint64(n)); sent(n) }
	} else {
		cfg.Sent = func(n int64) { s.sent.Add(uint64(n)) }
	}
	go func() {
		defer unhook()
		read := make(chan struct{})
		go func() {
			defer close(read)
			buf := make([]byte, 512)
			for {
				if _, err := conn.Read(buf); err != nil {
					cancel(ErrHungUp) // or the pump ended first: see below
					return
				}
			}
		}()
		err := r.Pump(pctx, f, conn, cfg)
		if errors.Is(context.Cause(pctx), ErrHungUp) {
			err = ErrHungUp
		}
		cancel(context.Canceled)
		conn.SetReadDeadline(time.Unix(1, 0)) // ends the read
		<-read
		conn.SetReadDeadline(time.Time{})
		done(err)
	}()
	return func() { cancel(context.Canceled) }
}

// sendJob is one viewer. Its fields belong to whoever holds the job: its
// worker, or the goroutine finishing a partial write.
type sendJob struct {
	r      *stream.Reader
	f      *stream.Format
	conn   net.Conn
	sock   sock
	cfg    stream.PumpConfig
	done   func(error)
	w      *sendWorker
	unhook func() bool

	stopped atomic.Bool
	readAt  time.Time      // when to next read and discard what the viewer sent
	hold    bool           // catch-up waits catchUpDelay: the first picture has left
	eager   bool           // in the worker's eager list
	watched *stream.Stream // stream whose packets wake the worker for this job
	out     net.Buffers    // bytes a partial write left behind
}

// stop asks the job's worker to end it.
func (j *sendJob) stop() {
	if j.stopped.CompareAndSwap(false, true) {
		j.w.poke()
	}
}

// sendWorker owns a set of jobs and writes them from one goroutine.
type sendWorker struct {
	sent     *atomic.Uint64 // the Sender's byte count
	fromFile *atomic.Uint64 // and of those sent from wire files
	wake     chan struct{}  // capacity 1: a pending wake-up

	mu       sync.Mutex
	incoming []*sendJob // new jobs and jobs back from a partial write
	closed   bool       // the worker stopped: jobs end as they arrive

	hasIncoming atomic.Bool // incoming is not empty

	// Owned by run.
	start   time.Time
	now     time.Time // taken once per round of serving
	tick    int64     // last wheel tick processed
	wheel   [wheelSlots][]*sendJob
	inWheel int
	eager   []*sendJob // written whenever their stream has news
	spare   []*sendJob // the eager list's other array
	watched map[*stream.Stream]int
	io      *sockIO
	pending []*sendJob // scratch for draining incoming
	scratch [512]byte  // what viewers send lands here and is dropped
}

// poke wakes the worker without blocking.
func (w *sendWorker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *sendWorker) enqueue(j *sendJob) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		j.end(context.Canceled)
		return
	}
	w.incoming = append(w.incoming, j)
	w.hasIncoming.Store(true)
	w.mu.Unlock()
	w.poke()
}

func (w *sendWorker) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	w.tick = w.tickAt(time.Now())
	for {
		w.now = time.Now()
		if w.inWheel == 0 {
			w.tick = w.tickAt(w.now) // an empty wheel starts from now
		}
		w.serveIncoming()
		w.serveEager()
		w.serveWheel(w.now)
		if w.inWheel > 0 {
			next := w.start.Add(time.Duration(w.tick+1) * tickLen)
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			w.closeAll()
			return
		case <-w.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (w *sendWorker) tickAt(t time.Time) int64 { return int64(t.Sub(w.start) / tickLen) }

// serveIncoming takes new and returning jobs and writes each at once: a
// joining viewer's first write is its decoder configuration and keyframe,
// so it sees a picture before anyone's catching up goes on. A viewer whose
// first picture left with the answer to its play waits catchUpDelay on the
// wheel for the rest.
func (w *sendWorker) serveIncoming() {
	w.mu.Lock()
	w.pending, w.incoming = w.incoming, w.pending[:0]
	w.hasIncoming.Store(false)
	w.mu.Unlock()
	for i, j := range w.pending {
		w.pending[i] = nil
		if j.hold {
			j.hold = false
			w.scheduleIn(j, catchUpDelay)
			continue
		}
		w.setEager(j, true)
		w.keep(j, w.serve(j))
	}
}

// keep files a job after a write: eager while it has no merge window or is
// catching up, else on the wheel.
func (w *sendWorker) keep(j *sendJob, res int) {
	if res != jobKeep {
		return
	}
	switch {
	case j.r.Backlog():
		w.poke() // more to write at once: come round again
		// Catching up (a joining viewer's GOP) yields to the node's other
		// work, such as other viewers joining, between two writes.
		runtime.Gosched()
	case j.cfg.MergeWindow > 0 && !j.r.Joining():
		w.setEager(j, false)
		w.schedule(j)
		return
	}
	if !j.eager {
		// From the wheel: a packet may have come between the write and
		// the watch, so look again next round.
		w.setEager(j, true)
		w.poke()
	}
	w.eager = append(w.eager, j)
}

// serveEager writes every eager job that has packets waiting. Jobs that
// arrive meanwhile are served first, between two eager jobs.
func (w *sendWorker) serveEager() {
	list := w.eager
	w.eager = w.spare[:0]
	for i, j := range list {
		list[i] = nil
		if w.hasIncoming.Load() {
			w.serveIncoming()
		}
		w.keep(j, w.serve(j))
	}
	w.spare = list[:0]
}

// serveWheel writes the jobs whose slots came due up to now.
func (w *sendWorker) serveWheel(now time.Time) {
	target := w.tickAt(now)
	for w.tick < target && w.inWheel > 0 {
		w.tick++
		slot := &w.wheel[w.tick%wheelSlots]
		jobs := *slot
		*slot = nil
		w.inWheel -= len(jobs)
		for i, j := range jobs {
			jobs[i] = nil
			// One that fell behind, or is catching up after joining,
			// turns eager until it is level; then back to its window.
			w.keep(j, w.serve(j))
		}
		if *slot == nil {
			*slot = jobs[:0] // keep the slot's array for its next round
		}
	}
	w.tick = target
}

// schedule puts j on the wheel one merge window after the current tick.
func (w *sendWorker) schedule(j *sendJob) { w.scheduleIn(j, j.cfg.MergeWindow) }

// scheduleIn puts j on the wheel d after the current tick.
func (w *sendWorker) scheduleIn(j *sendJob, d time.Duration) {
	n := int64((d + tickLen - 1) / tickLen)
	n = max(1, min(n, wheelSlots-1))
	slot := &w.wheel[(w.tick+n)%wheelSlots]
	*slot = append(*slot, j)
	w.inWheel++
}

// setEager tracks whether j waits on its stream's packets.
func (w *sendWorker) setEager(j *sendJob, eager bool) {
	if j.eager == eager {
		return
	}
	j.eager = eager
	s := j.r.Stream()
	if eager {
		if w.watched[s]++; w.watched[s] == 1 {
			s.Watch(w.wake)
		}
		j.watched = s
		return
	}
	if w.watched[s]--; w.watched[s] == 0 {
		delete(w.watched, s)
		s.Unwatch(w.wake)
	}
	j.watched = nil
}

const (
	jobKeep = iota // still the worker's
	jobGone        // finished, or handed to a goroutine of its own
)

// serve writes what j's reader has waiting.
func (w *sendWorker) serve(j *sendJob) int {
	if j.stopped.Load() {
		w.finish(j, context.Canceled)
		return jobGone
	}
	if !w.now.Before(j.readAt) {
		j.readAt = w.now.Add(readEvery)
		if err := w.io.drain(j.sock, w.scratch[:]); err != nil {
			w.finish(j, err)
			return jobGone
		}
	}
	r := j.r
	if err := r.Poll(); err != nil {
		w.finish(j, err)
		return jobGone
	}
	bufs, span := r.Encode(j.f)
	if len(bufs) == 0 {
		return jobKeep
	}
	n, err := w.write(j.sock, bufs, span)
	if n > 0 {
		w.sent.Add(uint64(n))
		if j.cfg.Sent != nil {
			j.cfg.Sent(n)
		}
	}
	if err != nil && !errors.Is(err, errFull) {
		w.finish(j, hungUp(err))
		return jobGone
	}
	if rest := rawio.Consume(bufs, n); len(rest) > 0 {
		// The socket is full: finish this write off the worker.
		j.out = rest
		w.setEager(j, false)
		go w.finishWrite(j)
		return jobGone
	}
	return jobKeep
}

// write makes one non-blocking write of bufs to sk: from the stream's wire
// file when the batch is one range of it and large enough, else from
// memory.
func (w *sendWorker) write(sk sock, bufs [][]byte, span stream.Span) (int64, error) {
	if span.Len >= minSendfile {
		if wf, ok := span.Spool.(*wireFile); ok {
			if n, ok, err := wf.send(w.io, sk, span.Off, span.Len); ok {
				w.fromFile.Add(uint64(max(n, 0)))
				return n, err
			}
		}
	}
	return w.io.writev(sk, bufs)
}

// finishWrite completes a partial write within the write timeout and
// returns the job to its worker.
func (w *sendWorker) finishWrite(j *sendJob) {
	j.conn.SetWriteDeadline(time.Now().Add(j.cfg.WriteTimeout))
	n, err := j.out.WriteTo(j.conn)
	j.out = nil
	if n > 0 {
		w.sent.Add(uint64(n))
		if j.cfg.Sent != nil {
			j.cfg.Sent(n)
		}
	}
	if err == nil {
		err = j.conn.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		j.end(hungUp(err))
		return
	}
	w.enqueue(j)
}

// finish ends a job the worker holds.
func (w *sendWorker) finish(j *sendJob, err error) {
	w.setEager(j, false)
	j.end(err)
}

func (j *sendJob) end(err error) {
	j.unhook()
	j.r.Release()
	go j.done(err)
}

// closeAll ends every job at shutdown.
func (w *sendWorker) closeAll() {
	w.mu.Lock()
	w.closed = true
	w.eager = append(w.eager, w.incoming...)
	w.incoming = nil
	w.mu.Unlock()
	for _, j := range w.eager {
		w.finish(j, context.Canceled)
	}
	w.eager = nil
	for i := range w.wheel {
		for _, j := range w.wheel[i] {
			w.finish(j, context.Canceled)
		}
		w.wheel[i] = nil
	}
	w.inWheel = 0
}
