package stream

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/media"
)

// maxBatch bounds the packets a reader takes from the log at once. It keeps
// a vectored write under the kernel's iovec limit and each reader's batch
// arrays small: only the GOP sent to a new reader needs more than one write.
const maxBatch = 64

// firstBatch bounds a reader's first batch after it starts or skips: the
// keyframe goes out at once, ahead of the rest of the GOP, so a burst of
// joining viewers each sees a first frame before any gets its whole GOP.
const firstBatch = 1

// item is one packet queued for a reader. Decoder configuration sent ahead
// of a join point is restamped to the join point's time, so a reader's
// timestamps never go backwards.
type item struct {
	e       *entry
	restamp bool
	dts     int64
}

// Reader follows a stream's log from its own cursor. A Reader is used by one
// goroutine; Close may be called from any.
type Reader struct {
	s       *Stream
	proto   string
	cursor  uint64
	waitKey bool
	joining bool // the next batch is the first since a start or skip
	history bool // starts with the recent past (Rewind)
	// catchUp: started in the past (Rewind) and not at the head yet: it
	// is not lagging, whatever its distance from the newest packet.
	catchUp bool
	backlog bool // the last batch stopped short of the log's head

	sentMeta, sentVideo, sentAudio *entry

	skipCount int
	skipStart time.Time

	batch []item
	bufs  [][]byte
	span  Span        // the batch's bytes in a spool, when they are one range
	nb    net.Buffers // kept in the Reader so a write allocates nothing
	once  sync.Once
}

// NewReader attaches a reader for the given protocol ("rtmp", "flv", "hls").
// It starts at the newest keyframe in the log, decoder configuration first,
// or waits for the next keyframe when the log holds none.
func (s *Stream) NewReader(proto string) (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	r := &Reader{s: s, proto: proto}
	r.startAtKey()
	s.readers[proto]++
	return r, nil
}

// startAtKey moves the cursor to the newest keyframe, or to the head to wait
// for one. Caller holds s.mu.
func (r *Reader) startAtKey() {
	s := r.s
	r.joining = true
	if s.key != nil {
		r.cursor, r.waitKey = s.key.seq, false
		return
	}
	r.cursor, r.waitKey = s.head, true
}

// Rewind makes a reader that has not read yet start with the recent past:
// at the oldest keyframe the log holds (the log keeps MaxLag of history,
// or the two whole GOPs before the newest when they are longer, up to
// twice MaxLag), or, while the log holds no keyframe, at the first one to
// come, however many come at once. Until it has caught up with the head
// the reader is not lagging. A new HLS muxer has two whole segments at
// once from it, the least an fMP4 playlist lists, and a node that starts
// relaying a stream has them for its own muxers: a player moved to a
// node that was not muxing the stream finds its playlist at once, and the
// segments it needs next. Other readers start at the newest keyframe.
func (r *Reader) Rewind() {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !r.joining {
		return
	}
	r.history = true
	if s.key == nil {
		return
	}
	window := 2 * s.cfg.MaxLag.Milliseconds()
	for seq := s.tail; seq < s.key.seq; seq++ {
		if e := s.at(seq); startable(e) && s.lastDTS-e.pkt.DTS <= window {
			r.cursor, r.waitKey, r.catchUp = seq, false, true
			return
		}
	}
}

// KeepAll makes a reader that has not read yet keep everything from the
// keyframe it starts at, however many keyframes come at once, where other
// readers jump to the newest of them: a recording loses nothing of a
// burst (a publisher's first seconds sent faster than real time, say).
func (r *Reader) KeepAll() {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.joining {
		r.history = true
	}
}

// startable reports whether a reader may begin playback at e.
func startable(e *entry) bool {
	p := e.pkt
	if p.Keyframe {
		return true
	}
	// Audio-only streams have no keyframes: any audio frame will do.
	return p.Kind == media.KindAudio && !p.SeqHeader && e.video == nil
}

// Close detaches the reader from its stream.
func (r *Reader) Close() {
	r.once.Do(func() {
		s := r.s
		s.mu.Lock()
		if s.readers[r.proto]--; s.readers[r.proto] <= 0 {
			delete(s.readers, r.proto)
		}
		s.mu.Unlock()
	})
}

// fill waits until the log has packets past the cursor and queues them in
// r.batch. It returns io.EOF once the stream is closed and drained, and
// ErrSlowReader when the reader keeps falling behind.
func (r *Reader) fill(ctx context.Context) error {
	for {
		wake, err := r.pollWake()
		if err != nil || len(r.batch) > 0 {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Poll takes the reader's next batch: whatever the log holds past its
// cursor, without waiting. It returns io.EOF once the stream is closed and
// drained, and ErrSlowReader when the reader keeps falling behind. Encode
// returns the batch's bytes; a batch may be empty.
//
// Poll, Encode, Backlog, Joining and Release are how an egress engine
// drives a reader from its own goroutines (see internal/egress); Pump and
// ReadPackets are the same for a reader with a goroutine of its own.
func (r *Reader) Poll() error {
	_, err := r.pollWake()
	return err
}

// Encode returns the wire form in format f of the batch Poll took (none
// when it is empty), and, when the batch's bytes are one range of the
// stream's spool of f, where: sending from the spool then sends the same
// bytes. The slices are valid until the reader's next Poll.
func (r *Reader) Encode(f *Format) ([][]byte, Span) {
	if len(r.batch) == 0 {
		return nil, Span{}
	}
	bufs := r.encodeBatch(f)
	return bufs, r.span
}

// Backlog reports whether the last batch stopped short of the log's head:
// the reader is catching up and has more to take at once.
func (r *Reader) Backlog() bool { return r.backlog }

// Joining reports whether the reader's next batch is its first since it
// started or skipped (its keyframe, sent alone).
func (r *Reader) Joining() bool { return r.joining }

// Stream returns the stream the reader follows.
func (r *Reader) Stream() *Stream { return r.s }

// Release drops the arrays the reader keeps between batches. An egress
// engine calls it when it is done with the reader.
func (r *Reader) Release() {
	r.nb, r.bufs, r.batch, r.span = nil, nil, nil, Span{}
}

// pollWake is poll that also returns the channel closed by the next append.
func (r *Reader) pollWake() (<-chan struct{}, error) {
	r.batch = r.batch[:0]
	s := r.s
	s.mu.RLock()
	var err error
	if r.cursor != s.head {
		err = r.collect()
	}
	closed, wake, closeErr := s.closed, s.wake, s.closeErr
	s.mu.RUnlock()
	if err == nil && len(r.batch) == 0 && closed {
		err = closeErr
	}
	return wake, err
}

// collect queues entries from the cursor on. Caller holds s.mu for reading;
// the reader's own fields belong to its goroutine.
func (r *Reader) collect() error {
	s := r.s
	if r.cursor < s.tail {
		if err := r.skip(); err != nil { // the log moved on without us
			return err
		}
	} else if !r.catchUp && s.key != nil && s.key.seq > r.cursor && r.cursor < s.head &&
		s.lastDTS-s.at(r.cursor).pkt.DTS > s.cfg.MaxLag.Milliseconds() {
		if err := r.skip(); err != nil {
			return err
		}
	}
	limit := maxBatch
	if r.joining {
		limit = firstBatch
	}
	n := 0
	if r.waitKey && !r.history && s.key != nil && s.key.seq > r.cursor {
		// Keyframes came at once (a relay's first pull brings the recent
		// past): start at the newest, as NewReader would have.
		r.cursor = s.key.seq
	}
	for ; r.cursor < s.head && n < limit; r.cursor++ {
		e := s.at(r.cursor)
		if r.waitKey {
			if !startable(e) {
				continue
			}
			r.waitKey = false
		}
		r.push(e)
		n++
	}
	if n > 0 {
		r.joining = false
	}
	r.backlog = r.cursor < s.head
	r.catchUp = r.catchUp && r.backlog
	return nil
}

// skip jumps to the newest keyframe, counting the skip; too many skips in
// the window close the reader.
func (r *Reader) skip() error {
	s := r.s
	s.skips.Add(1)
	if c := s.cfg.Counters; c != nil {
		c.Skips.Add(1)
	}
	now := time.Now()
	if now.Sub(r.skipStart) > s.cfg.SkipWindow {
		r.skipStart, r.skipCount = now, 0
	}
	r.skipCount++
	if r.skipCount > s.cfg.MaxSkips {
		s.slowClose.Add(1)
		if c := s.cfg.Counters; c != nil {
			c.SlowClosed.Add(1)
		}
		return ErrSlowReader
	}
	r.startAtKey()
	return nil
}

// push queues e, preceded by any decoder configuration in force for e that
// this reader has not sent yet.
func (r *Reader) push(e *entry) {
	p := e.pkt
	isMeta := p.Kind == media.KindData
	isVideoCfg := p.SeqHeader && p.Kind == media.KindVideo
	isAudioCfg := p.SeqHeader && p.Kind == media.KindAudio
	if !isMeta && e.meta != nil && e.meta != r.sentMeta {
		r.batch = append(r.batch, item{e: e.meta, restamp: true, dts: p.DTS})
		r.sentMeta = e.meta
	}
	if !isVideoCfg && e.video != nil && e.video != r.sentVideo {
		r.batch = append(r.batch, item{e: e.video, restamp: true, dts: p.DTS})
		r.sentVideo = e.video
	}
	if !isAudioCfg && e.audio != nil && e.audio != r.sentAudio {
		r.batch = append(r.batch, item{e: e.audio, restamp: true, dts: p.DTS})
		r.sentAudio = e.audio
	}
	switch {
	case isMeta:
		r.sentMeta = e
	case isVideoCfg:
		r.sentVideo = e
	case isAudioCfg:
		r.sentAudio = e
	}
	r.batch = append(r.batch, item{e: e})
}

// packet returns the item's packet, restamped when needed (a copy: the log's
// packets are immutable).
func (it *item) packet() *media.Packet {
	if !it.restamp || it.dts == it.e.pkt.DTS {
		return it.e.pkt
	}
	cp := *it.e.pkt
	cp.DTS = it.dts
	return &cp
}

// Ready returns the wire form in format f of what the log holds for the
// reader now, without waiting: after a start, the decoder configuration and
// the keyframe (none while the stream waits for one). A server sends it with
// its answer to the play request, so the first picture leaves in the same
// write. The slices are valid until the reader's next use.
func (r *Reader) Ready(f *Format) ([][]byte, error) {
	if err := r.Poll(); err != nil {
		return nil, err
	}
	return r.encodeBatch(f), nil
}

// ReadPackets waits for packets and appends them to dst. Packets are shared
// and must not be modified. It returns io.EOF when the stream has ended.
func (r *Reader) ReadPackets(ctx context.Context, dst []*media.Packet) ([]*media.Packet, error) {
	if err := r.fill(ctx); err != nil {
		return dst, err
	}
	for i := range r.batch {
		dst = append(dst, r.batch[i].packet())
	}
	return dst, nil
}

// DeadlineWriter is a connection the reader writes to.
type DeadlineWriter interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

// PumpConfig tunes how a reader writes.
type PumpConfig struct {
	// WriteTimeout fails a write that makes no progress for this long.
	// Defaults to 10s.
	WriteTimeout time.Duration
	// MergeWindow is the least time between two writes: packets arriving
	// meanwhile go out together in the next write. Larger windows cost less
	// CPU per viewer and add up to the window in latency; 0 writes every
	// packet as soon as it arrives (low-latency mode).
	MergeWindow time.Duration
	// Nagle lets the kernel join small writes to the viewer's TCP socket
	// while earlier data is unacknowledged (TCP_NODELAY off): fewer
	// segments for less CPU, at the cost of holding a write up to a round
	// trip on a long path. False leaves the socket as it is.
	Nagle bool
	// Sent, if set, is called with the bytes of each write.
	Sent func(int64)
}

// Pump writes the stream to w in format f until ctx ends, the stream ends
// (io.EOF), a write fails or makes no progress within the write timeout, or
// the reader keeps falling behind (ErrSlowReader). Each write sends
// everything since the cursor in one vectored write. Between writes the
// reader sleeps out the merge window instead of waking for every packet, so
// a busy stream costs each viewer a few wake-ups a second, not one per packet.
func (r *Reader) Pump(ctx context.Context, f *Format, w DeadlineWriter, cfg PumpConfig) error {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	var deadline, lastWrite time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// A reader with a backlog (catching up after joining) writes on.
		if cfg.MergeWindow > 0 && !lastWrite.IsZero() && !r.backlog {
			if wait := time.Until(lastWrite.Add(cfg.MergeWindow)); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		if err := r.fill(ctx); err != nil {
			return err
		}
		bufs := r.encodeBatch(f)
		// Moving a deadline costs a timer update: refresh it only when less
		// than half of the timeout is left.
		now := time.Now()
		if deadline.Sub(now) < cfg.WriteTimeout/2 {
			deadline = now.Add(cfg.WriteTimeout)
			if err := w.SetWriteDeadline(deadline); err != nil {
				return err
			}
		}
		lastWrite = now
		r.nb = bufs
		n, err := r.nb.WriteTo(w)
		if cfg.Sent != nil {
			cfg.Sent(n)
		}
		if err != nil {
			return err
		}
	}
}

// encodeBatch returns the wire form of r.batch in format f: shared bytes
// from the log, or a fresh encoding for restamped decoder configuration.
func (r *Reader) encodeBatch(f *Format) [][]byte {
	r.bufs = r.bufs[:0]
	r.span = Span{}
	inSpool := true
	for i := range r.batch {
		it := &r.batch[i]
		if it.restamp && it.dts != it.e.pkt.DTS {
			r.bufs = append(r.bufs, f.encode(it.packet()))
			inSpool = false
			continue
		}
		b := it.e.encoded(f)
		r.bufs = append(r.bufs, b)
		if inSpool {
			w := &it.e.wire[f.id]
			inSpool = r.span.extend(w.spool, w.off, len(b))
		}
	}
	if !inSpool {
		r.span = Span{}
	}
	bufs := r.bufs
	if cap(r.batch) > 16 && len(r.batch) < 8 {
		// The GOP sent on joining grew the arrays; steady batches are small.
		r.batch, r.bufs = nil, nil
	}
	return bufs
}
