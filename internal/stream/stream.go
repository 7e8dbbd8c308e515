// Package stream is meshcast's fan-out core: one publisher appends immutable
// packets to a bounded log and any number of readers follow it, each at its
// own cursor. The publisher never waits for a reader; readers that fall
// behind skip to the newest keyframe, and readers that keep falling behind are
// closed.
package stream

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/media"

	"github.com/meshcast/meshcast/internal/streamname"
)

// Errors callers branch on.
var (
	// ErrBusy is returned when a publisher attaches to a stream that already has one.
	ErrBusy = errors.New("stream already has a publisher")
	// ErrClosed is returned when attaching to or writing into a closed stream.
	ErrClosed = errors.New("stream closed")
	// ErrSlowReader is returned to a reader that kept falling behind live.
	ErrSlowReader = errors.New("reader too slow: kept falling behind live")
	// ErrShutdown ends the readers of a stream whose node is shutting down
	// (CloseWith): the stream did not end, and a relay pulling it looks for
	// it again, on the node its publisher comes back to.
	ErrShutdown = errors.New("stream closed: node shutting down")
)

// Config bounds a stream's log and sets its slow-reader policy.
type Config struct {
	// MaxLag is how far (in media time) a reader may trail the newest packet
	// before it skips to the newest keyframe. Defaults to 5s.
	MaxLag time.Duration
	// MaxPackets caps the packets held in the log (rounded up to a power of
	// two). Defaults to 4096.
	MaxPackets int
	// MaxBytes caps the payload bytes held in the log. Defaults to 64 MiB.
	MaxBytes int
	// MaxSkips is how many skips within SkipWindow a reader may make before it
	// is closed as too slow. Defaults to 3.
	MaxSkips int
	// SkipWindow is the window for MaxSkips. Defaults to 1m.
	SkipWindow time.Duration
	// Counters, if set, receives the stream's contribution to node-wide
	// totals shared by every stream of a node. Defaults to none.
	Counters *Counters
}

// Counters are node-wide totals that the streams sharing them add to: they
// only grow, however streams come and go. They are atomic, so a metrics
// scrape reads them without taking any stream's lock.
type Counters struct {
	// ReceivedBytes counts the media payload bytes publishers (and relays
	// from other nodes) wrote into streams.
	ReceivedBytes atomic.Uint64
	// Skips counts the times a reader skipped ahead to the newest keyframe.
	Skips atomic.Uint64
	// SlowClosed counts the readers closed for falling behind live.
	SlowClosed atomic.Uint64
}

func (c *Config) setDefaults() {
	if c.MaxLag <= 0 {
		c.MaxLag = 5 * time.Second
	}
	if c.MaxPackets <= 0 {
		c.MaxPackets = 4096
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 64 << 20
	}
	if c.MaxSkips <= 0 {
		c.MaxSkips = 3
	}
	if c.SkipWindow <= 0 {
		c.SkipWindow = time.Minute
	}
}

// maxFormats bounds how many wire formats an entry caches.
const maxFormats = 4

// entry is one packet in the log plus its lazily built, shared wire forms.
type entry struct {
	pkt *media.Packet
	seq uint64
	// Decoder configuration in force for this packet. A reader that starts or
	// skips here sends these first if it has not sent them already.
	meta, video, audio *entry
	wire               [maxFormats]wireForm
}

type wireForm struct {
	once sync.Once
	b    []byte
	// The same bytes in the stream's spool of the format, when the
	// packet was appended while the stream had one.
	spool Spool
	off   int64
}

// encoded returns e's wire form in format f, building it on first use. All
// readers of f share the result.
func (e *entry) encoded(f *Format) []byte {
	w := &e.wire[f.id]
	w.once.Do(func() { w.b = f.encode(e.pkt) })
	return w.b
}

// Format is an output's wire encoding of packets (RTMP chunks, FLV tags).
// Each packet is encoded at most once per format and the bytes are shared by
// every reader using that format.
type Format struct {
	id     int
	name   string
	encode func(*media.Packet) []byte
}

var formatCount atomic.Int32

// NewFormat registers a wire format. Formats are created at package
// initialisation; at most 4 may exist in one process.
func NewFormat(name string, encode func(*media.Packet) []byte) *Format {
	id := int(formatCount.Add(1)) - 1
	if id >= maxFormats {
		panic("stream: too many formats")
	}
	return &Format{id: id, name: name, encode: encode}
}

// Encode returns the format's encoding of p, without caching.
func (f *Format) Encode(p *media.Packet) []byte { return f.encode(p) }

// Name returns the name the format was registered with.
func (f *Format) Name() string { return f.name }

// PublisherInfo describes the client publishing a stream.
type PublisherInfo struct {
	Protocol   string // "rtmp", ...
	RemoteAddr string
	// Credential identifies the credentials the publisher presented (a
	// digest, never the secret); empty when none. A publisher presenting
	// the live publisher's credential takes the stream over.
	Credential string `json:"-"`
}

// Stream is one live stream: the packet log shared by its readers.
type Stream struct {
	name    streamname.Name
	cfg     Config
	created time.Time

	mu    sync.RWMutex
	ring  []*entry // len is a power of two
	mask  uint64
	head  uint64 // seq of the next entry
	tail  uint64 // seq of the oldest entry held
	bytes int
	key   *entry // newest video keyframe held, or nil
	// The two keyframes before key, newest first (valid while nkeys
	// counts them): the history a new muxer needs is two whole GOPs.
	keys     [2]uint64
	keysDTS  [2]int64
	nkeys    int
	meta     *entry
	video    *entry
	audio    *entry
	wake     chan struct{} // closed and replaced on every append
	closed   bool
	closeErr error // what readers get once drained after Close
	// Egress workers with viewers waiting on this stream's packets: each
	// gets one wake-up per append, whatever its number of viewers.
	watchers []chan struct{}
	// Spools of the formats egress sends from, and those formats, by
	// format id.
	spools      [maxFormats]Spool
	spoolFormat [maxFormats]*Format

	// Publisher session state (under mu).
	pub        *Publisher
	sessions   int
	offset     int64     // added to the current session's timestamps
	needOffset bool      // the next packet starts a session: compute offset
	keepAhead  bool      // the session is a relay's resumed pull: see sessionOffset
	lastAt     time.Time // when the latest packet was appended
	waitKey    bool      // drop video frames until the session's first keyframe
	lastDTS    int64     // highest timestamp appended
	hasDTS     bool
	info       Info
	rate       rateMeter
	keyDTS     int64 // timestamp of the session's newest video keyframe
	hasKeyDTS  bool
	keyGap     int64 // media time between the last two keyframes, ms

	readers   map[string]int // live readers by protocol
	skips     atomic.Uint64
	slowClose atomic.Uint64
}

// New creates an empty stream with no publisher.
func New(name streamname.Name, cfg Config) *Stream {
	cfg.setDefaults()
	n := 1
	for n < cfg.MaxPackets {
		n <<= 1
	}
	return &Stream{
		name:    name,
		cfg:     cfg,
		created: time.Now(),
		ring:    make([]*entry, n),
		mask:    uint64(n - 1),
		wake:    make(chan struct{}),
		readers: make(map[string]int),
	}
}

// Name returns the stream's name.
func (s *Stream) Name() streamname.Name { return s.name }

// Attach makes p the stream's publisher. It fails with ErrBusy while another
// publisher is attached, unless info presents that publisher's credential:
// then the new publisher takes over, as a client reconnecting before its
// old connection was seen to end, and the old one is detached (its writes
// fail with ErrClosed; TookOver tells). It fails with ErrClosed
// after Close.
func (s *Stream) Attach(info PublisherInfo) (*Publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var old *Publisher
	if s.pub != nil {
		if !s.pub.canTakeOver(info) {
			return nil, ErrBusy
		}
		old = s.pub
	}
	p := &Publisher{s: s, info: info, since: time.Now(), tookOver: old != nil}
	s.pub = p
	s.beginSession()
	s.info.Publisher = info
	s.info.PublishedAt = p.since
	return p, nil
}

// CanTakeOver reports whether a publisher presenting info may attach now:
// the stream has no publisher, or info presents the live one's credential.
func (s *Stream) CanTakeOver(info PublisherInfo) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pub == nil || s.pub.canTakeOver(info)
}

// canTakeOver reports whether a publisher presenting info may replace p.
func (p *Publisher) canTakeOver(info PublisherInfo) bool {
	return info.Credential != "" && info.Credential == p.info.Credential
}

// HasPublisher reports whether a publisher is attached.
func (s *Stream) HasPublisher() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.pub != nil
}

// Close ends the stream: readers drain what is logged and then see io.EOF.
// A publisher still attached gets ErrClosed on its next write.
func (s *Stream) Close() { s.CloseWith(io.EOF) }

// CloseWith is Close, with readers seeing err instead of io.EOF once they
// have drained the log: the stream did not end, it went elsewhere (see
// hub.Revoke), and a relay pulling it looks for it again.
func (s *Stream) CloseWith(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.closeErr = true, err
	s.pub = nil
	close(s.wake)
	s.notifyWatchers()
	spools := s.spools
	s.mu.Unlock()
	for _, sp := range spools {
		if sp != nil {
			sp.Close()
		}
	}
}

// Watch makes every append, and the stream's close, send a wake-up to ch
// without blocking; ch should have capacity 1. An egress worker watches the
// streams of the viewers it waits for, once each, whatever their number.
// The first wake-up is sent at once: packets may have come before.
func (s *Stream) Watch(ch chan struct{}) {
	s.mu.Lock()
	s.watchers = append(s.watchers, ch)
	s.mu.Unlock()
	select {
	case ch <- struct{}{}: // packets may have come before the watch
	default:
	}
}

// Unwatch undoes one Watch.
func (s *Stream) Unwatch(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.watchers {
		if c == ch {
			last := len(s.watchers) - 1
			s.watchers[i] = s.watchers[last]
			s.watchers[last] = nil
			s.watchers = s.watchers[:last]
			return
		}
	}
}

// notifyWatchers wakes the watching workers. Caller holds s.mu.
func (s *Stream) notifyWatchers() {
	for _, ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Closed reports whether Close has been called.
func (s *Stream) Closed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// Publisher is the write side of a stream held by one publishing client.
type Publisher struct {
	s        *Stream
	info     PublisherInfo
	since    time.Time
	once     sync.Once
	onClose  func()
	tookOver bool // attached by taking the stream over from a live publisher
}

// OnClose sets a function called once after the publisher detaches. It must
// be set before Close can be called.
func (p *Publisher) OnClose(f func()) { p.onClose = f }

// TookOver reports whether p took the stream over from a live publisher.
func (p *Publisher) TookOver() bool { return p.tookOver }

// Stream returns the stream p publishes to.
func (p *Publisher) Stream() *Stream { return p.s }

// Attached reports whether p is still its stream's publisher.
func (p *Publisher) Attached() bool {
	p.s.mu.RLock()
	defer p.s.mu.RUnlock()
	return p.s.pub == p
}

// Close detaches the publisher. The stream stays open for readers; its owner
// decides how long to wait for a new publisher.
func (p *Publisher) Close() {
	p.once.Do(func() {
		s := p.s
		s.mu.Lock()
		if s.pub == p {
			s.pub = nil
		}
		s.mu.Unlock()
		if p.onClose != nil {
			p.onClose()
		}
	})
}

// Restart begins a new session of p, as if its client had reconnected:
// timestamps go on after the stream's newest and video resumes at the next
// keyframe. A relay calls it when it resumes after its upstream broke.
// Its new upstream's timestamps are kept when they already come after the
// stream's newest (by at most ResumeWindow): they are the stream's timeline
// on every node (sessionOffset).
func (p *Publisher) Restart() {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub == p {
		s.beginSession()
		s.keepAhead = true
	}
}

// ResumeWindow bounds how far ahead of a stream's newest timestamp a relay's
// resumed pull may start and keep its timestamps: about the longest a relay
// looks for a new upstream.
const ResumeWindow = 30 * time.Second

// beginSession makes the next packet start a publisher session: its
// timestamps are rebased to follow the stream's newest and its video waits
// for a keyframe. Caller holds s.mu.
func (s *Stream) beginSession() {
	s.sessions++
	s.needOffset = true
	s.keepAhead = false
	s.waitKey = true
}

// sessionOffset is what is added to the timestamps of a session whose first
// packet is at first, on a stream that has packets. The session follows the
// stream's newest timestamp by the time that passed since it was appended
// (at least 1 ms, at most ResumeWindow), so that media time keeps pace with
// the clock across a publisher's reconnection: a publisher that comes back
// on another node continues a timeline the relays of the stream can keep.
// A relay's resumed pull whose timestamps already come after the newest
// keeps them: every node relaying a stream then has the same timestamps as
// its owner, even after the owner changed. Caller holds s.mu.
func (s *Stream) sessionOffset(first int64) int64 {
	window := ResumeWindow.Milliseconds()
	if s.keepAhead && first > s.lastDTS && first-s.lastDTS <= window {
		return 0
	}
	gap := min(max(time.Since(s.lastAt).Milliseconds(), 1), window)
	return s.lastDTS + gap - first
}

// Position is where a stream's timeline stands: its newest timestamp (ms)
// and when that was appended.
type Position struct {
	DTS int64
	At  time.Time
}

// Position returns the stream's newest timestamp and when it was
// appended, and false while the stream has none.
func (s *Stream) Position() (Position, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Position{DTS: s.lastDTS, At: s.lastAt}, s.hasDTS
}

// Follow makes a stream that has no packets yet continue the timeline at
// p, as if p were its own newest timestamp: its first session follows p.DTS
// by the time since p.At (sessionOffset, at least 1 ms, at most
// ResumeWindow). A new owner of a stream it never had calls it with the
// previous owner's position, so that relays and HLS numbering on other
// nodes go on. p.At may come from another node's clock: a skew between the
// two is a shift of the new timeline, bounded by the same limits. A stream
// with packets keeps its own timeline.
func (s *Stream) Follow(p Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasDTS {
		return
	}
	s.lastDTS, s.lastAt, s.hasDTS = p.DTS, p.At, true
}

// WritePacket appends pkt to the stream's log. The stream takes ownership of
// pkt and its payload. It never blocks on readers.
func (p *Publisher) WritePacket(pkt *media.Packet) error {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub != p {
		return ErrClosed
	}
	now := time.Now()
	s.rate.add(now, len(pkt.Payload))
	if c := s.cfg.Counters; c != nil {
		c.ReceivedBytes.Add(uint64(len(pkt.Payload)))
	}
	if pkt.SeqHeader || pkt.Kind == media.KindData {
		s.updateInfo(pkt)
	}
	if s.needOffset {
		// Rebase so timestamps keep increasing across publisher sessions.
		s.needOffset = false
		s.hasKeyDTS = false // a new session measures its own GOPs
		if s.hasDTS {
			s.offset = s.sessionOffset(pkt.DTS)
		} else {
			s.offset = 0
		}
	}
	if pkt.Kind == media.KindVideo && !pkt.SeqHeader && s.waitKey {
		if !pkt.Keyframe {
			return nil // a session starts at its first keyframe
		}
		s.waitKey = false
	}
	pkt.DTS += s.offset
	if pkt.Kind == media.KindVideo && pkt.Keyframe && !pkt.SeqHeader {
		if s.hasKeyDTS && pkt.DTS > s.keyDTS {
			s.keyGap = pkt.DTS - s.keyDTS
		}
		s.keyDTS, s.hasKeyDTS = pkt.DTS, true
	}
	s.append(pkt)
	s.lastAt = now
	return nil
}

// LastDTS returns the highest timestamp appended so far, and false while
// the stream has no packets. Everything a publisher session writes comes
// after the LastDTS seen when the session attached.
func (s *Stream) LastDTS() (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastDTS, s.hasDTS
}

// KeyframeInterval returns the media time between the last two video
// keyframes of one publisher session, or 0 until a session has sent two.
func (s *Stream) KeyframeInterval() time.Duration {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return time.Duration(s.keyGap) * time.Millisecond
}

// append adds pkt to the log and wakes readers. Caller holds s.mu.
func (s *Stream) append(pkt *media.Packet) {
	if !s.hasDTS || pkt.DTS > s.lastDTS {
		s.lastDTS = pkt.DTS
		s.hasDTS = true
	}
	e := &entry{pkt: pkt, seq: s.head, meta: s.meta, video: s.video, audio: s.audio}
	for id, sp := range s.spools {
		if sp != nil {
			w := &e.wire[id]
			if off, ok := sp.Append(e.encoded(s.spoolFormat[id])); ok {
				w.spool, w.off = sp, off
			}
		}
	}
	s.evict(len(pkt.Payload))
	s.ring[e.seq&s.mask] = e
	s.head++
	s.bytes += len(pkt.Payload)
	switch {
	case pkt.Kind == media.KindData:
		s.meta = e
	case pkt.SeqHeader && pkt.Kind == media.KindVideo:
		s.video = e
	case pkt.SeqHeader && pkt.Kind == media.KindAudio:
		s.audio = e
	case pkt.Keyframe:
		if s.key != nil {
			s.keys[1], s.keys[0] = s.keys[0], s.key.seq
			s.keysDTS[1], s.keysDTS[0] = s.keysDTS[0], s.key.pkt.DTS
			s.nkeys = min(s.nkeys+1, 2)
		}
		s.key = e
	}
	close(s.wake)
	s.wake = make(chan struct{})
	s.notifyWatchers()
}

// evict drops the oldest entries until there is room for one more of n bytes,
// and drops history older than the newest GOP once it trails by MaxLag,
// but for the two whole GOPs before the newest while they are within
// twice MaxLag: with them a new HLS muxer lists its playlist at once
// (see Reader.Rewind).
func (s *Stream) evict(n int) {
	maxLag := s.cfg.MaxLag.Milliseconds()
	var keep uint64 // entries from here on stay, whatever their age
	if s.key != nil {
		keep = s.key.seq
		if s.nkeys == 2 && s.lastDTS-s.keysDTS[1] <= 2*maxLag {
			keep = s.keys[1]
		}
	}
	for s.tail < s.head {
		old := s.ring[s.tail&s.mask]
		full := s.head-s.tail >= uint64(len(s.ring)) || s.bytes+n > s.cfg.MaxBytes
		stale := s.key != nil && old.seq < keep && s.lastDTS-old.pkt.DTS > maxLag
		if !full && !stale {
			return
		}
		s.ring[s.tail&s.mask] = nil
		s.bytes -= len(old.pkt.Payload)
		for i := range old.wire {
			if w := &old.wire[i]; w.spool != nil {
				w.spool.Evicted(w.off + int64(len(w.b)))
			}
		}
		s.tail++
		if s.key != nil && s.key.seq < s.tail {
			s.key = nil // GOP cache lost: new readers wait for the next keyframe
			s.nkeys = 0
		}
	}
}

// at returns the entry with sequence number seq. Caller holds s.mu and has
// checked tail <= seq < head.
func (s *Stream) at(seq uint64) *entry { return s.ring[seq&s.mask] }

// Stats are a stream's counters for metrics.
type Stats struct {
	Skips       uint64 // times a reader skipped ahead to a keyframe
	SlowClosed  uint64 // readers closed for falling behind
	LogPackets  int
	LogBytes    int
	Sessions    int // publisher sessions so far
	ReaderCount map[string]int
}

// Readers counts the stream's readers of every protocol.
func (s *Stream) Readers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, c := range s.readers {
		n += c
	}
	return n
}

// Stats returns the stream's counters.
func (s *Stream) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rc := make(map[string]int, len(s.readers))
	for k, v := range s.readers {
		rc[k] = v
	}
	return Stats{
		Skips:       s.skips.Load(),
		SlowClosed:  s.slowClose.Load(),
		LogPackets:  int(s.head - s.tail),
		LogBytes:    s.bytes,
		Sessions:    s.sessions,
		ReaderCount: rc,
	}
}
