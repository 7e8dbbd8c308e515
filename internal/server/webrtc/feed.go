package webrtc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"

	"github.com/pion/rtp/codecs"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// A stream's WHEP viewers share its video as RTP: one feed per stream
// reads the stream once, turns each H.264 access unit into RTP packets
// once, and keeps the recent ones in a bounded ring. Viewers send from
// the ring, each at its own cursor, changing only the header (SSRC,
// payload type, sequence numbers, timestamps); the ring is also what
// their NACKs are answered from. The feed never waits for a viewer: one
// that falls out of the ring jumps to the newest keyframe.

// Feed limits.
const (
	// rtpPayloadMTU bounds an RTP packet's payload, so that packets are
	// at most 1200 bytes (pion's and browsers' outbound MTU) before
	// SRTP's tag: room for tunnels and TURN on the way.
	rtpPayloadMTU = 1200 - 12
	// feedMaxPackets bounds the RTP packets a feed holds: a power of two.
	feedMaxPackets = 8192
	// feedMinPackets is a feed ring's first size; it doubles, up to
	// feedMaxPackets, as the stream's bitrate asks.
	feedMinPackets = 256
	// feedMaxBytes bounds the payload bytes a feed holds: a group of
	// pictures of 4 s at 16 Mbit/s.
	feedMaxBytes = 8 << 20
	// feedKeep is how much media time a feed keeps, within its bounds,
	// as well as the newest keyframe's group of pictures: NACKs ask for
	// the last few hundred milliseconds, joining viewers start at the
	// newest keyframe. 2 s at 90 kHz.
	feedKeep = 2 * 90000
	// feedFrameStep is the RTP timestamp step of a frame whose DTS does
	// not advance: 33 ms.
	feedFrameStep = 33
)

// Why feeds end, but for their streams ending.
var (
	errFeedClosing = errors.New("server closing")
	errNoViewers   = errors.New("no more viewers")
)

// rtpPacket is one RTP packet of a stream's video, shared by the
// stream's viewers: never modified once in the feed.
type rtpPacket struct {
	seq     uint64 // the feed's sequence number, which never wraps
	ts      uint32 // RTP timestamp, 90 kHz
	marker  bool   // the last packet of an access unit
	key     bool   // the first packet of a keyframe's access unit
	payload []byte
}

// feed is a stream's H.264 video as RTP packets, made once for all the
// stream's WHEP viewers. It runs from its stream's first viewer to its
// last (Server.acquireFeed, releaseFeed).
type feed struct {
	name streamname.Name
	log  *slog.Logger
	refs int // viewers; under Server.mu

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu     sync.RWMutex
	ring   []rtpPacket // len is a power of two
	head   uint64      // seq of the next packet
	tail   uint64      // seq of the oldest packet held
	bytes  int         // payload bytes held
	key    uint64      // seq of the newest keyframe held, if hasKey
	hasKey bool
	wake   chan struct{} // closed and replaced after each access unit
	err    error         // why the feed ended; nil while it runs
}

func newFeed(ctx context.Context, name streamname.Name, log *slog.Logger) *feed {
	f := &feed{name: name, log: log, ring: make([]rtpPacket, feedMinPackets), wake: make(chan struct{})}
	f.ctx, f.cancel = context.WithCancelCause(ctx)
	return f
}

// acquireFeed returns the feed of stream name, starting it for the
// stream's first viewer; releaseFeed gives it back.
func (s *Server) acquireFeed(name streamname.Name) (*feed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return nil, errFeedClosing
	}
	f := s.feeds[name]
	if f == nil {
		f = newFeed(s.ctx, name, s.log.With("stream", name))
		s.feeds[name] = f
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			f.run(s.hub)
			// A feed that ended by itself (the stream did) leaves the
			// table: the stream's next viewer starts a new one.
			s.mu.Lock()
			if s.feeds[name] == f {
				delete(s.feeds, name)
			}
			s.mu.Unlock()
		}()
	}
	f.refs++
	return f, nil
}

// releaseFeed gives back a viewer's feed; the last viewer's ends it.
func (s *Server) releaseFeed(f *feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.refs--; f.refs > 0 {
		return
	}
	f.cancel(errNoViewers)
	if s.feeds[f.name] == f {
		delete(s.feeds, f.name)
	}
}

// run reads the stream and packetizes its video until the feed is
// cancelled or the stream ends, then wakes the viewers with why.
func (f *feed) run(rs readers) {
	f.log.Info("webrtc feed started")
	err := f.ingest(rs)
	switch cause := context.Cause(f.ctx); {
	case errors.Is(cause, errNoViewers):
		err = cause
	case cause != nil:
		err = errFeedClosing
	}
	f.mu.Lock()
	f.err = err
	wake := f.wake
	f.mu.Unlock()
	close(wake)
	f.log.Info("webrtc feed stopped", "reason", err, "packets", f.head)
}

// ingest reads the stream, as the node's own reader (nobody watching: each
// viewer counts itself), and packetizes its H.264.
func (f *feed) ingest(rs readers) error {
	var z packetizer
	var rd *stream.Reader
	defer func() {
		if rd != nil {
			rd.Close()
		}
	}()
	pkts := make([]*media.Packet, 0, 128)
	for {
		if rd == nil {
			var err error
			if rd, err = rs.NewReader(f.name, hub.TranscodeProtocol); err != nil {
				return err
			}
			z.waitKey = true
		}
		var err error
		pkts, err = rd.ReadPackets(f.ctx, pkts[:0])
		if errors.Is(err, stream.ErrSlowReader) {
			// Fell behind the stream (never for long: the feed waits for
			// nobody): start again at its newest keyframe.
			rd.Close()
			rd = nil
			continue
		}
		if err != nil {
			return err
		}
		for _, p := range pkts {
			if payloads, ts, key := z.packetize(p); len(payloads) > 0 {
				f.publish(payloads, ts, key)
			}
		}
		clear(pkts)
	}
}

// packetizer turns a stream's H.264 frames into RTP payloads (RFC 6184,
// non-interleaved mode: single NAL units, STAP-A for the parameter sets,
// FU-A for the rest), from a keyframe on, with the parameter sets before
// every keyframe.
type packetizer struct {
	avc     *media.VideoConfig
	pay     codecs.H264Payloader
	waitKey bool   // drop frames until a keyframe
	hasTS   bool   // ts and lastDTS are set
	ts      uint32 // RTP timestamp of the last frame
	lastDTS int64
}

// packetize returns the RTP payloads of a frame, its RTP timestamp and
// whether it is a keyframe; none for anything but an H.264 frame.
// Timestamps advance by the frames' DTS steps, 33 ms where DTS does not
// advance, from a random start (RFC 3550 §5.1).
func (z *packetizer) packetize(p *media.Packet) ([][]byte, uint32, bool) {
	if p.Kind != media.KindVideo || p.Codec != media.CodecH264 {
		return nil, 0, false
	}
	if p.SeqHeader {
		if c, err := media.ParseVideoConfig(p.Codec, p.Payload); err == nil {
			z.avc = c
		}
		return nil, 0, false
	}
	if z.avc == nil || z.waitKey && !p.Keyframe {
		return nil, 0, false
	}
	nalus, err := media.AVCCToNALUs(p.Payload)
	if err != nil || len(nalus) == 0 {
		return nil, 0, false
	}
	z.waitKey = false
	// A fresh Annex B buffer each time: the payloader keeps parameter
	// sets it has not sent yet, pointing into it.
	payloads := z.pay.Payload(rtpPayloadMTU, annexB(z.avc.WithParamSets(nalus, p.Keyframe)))
	switch {
	case !z.hasTS:
		var b [4]byte
		rand.Read(b[:])
		z.ts, z.hasTS = binary.BigEndian.Uint32(b[:]), true
	case p.DTS > z.lastDTS:
		z.ts += uint32((p.DTS - z.lastDTS) * 90)
	default:
		z.ts += feedFrameStep * 90
	}
	z.lastDTS = p.DTS
	return payloads, z.ts, p.Keyframe
}

// publish adds an access unit's packets to the ring and wakes the
// viewers.
func (f *feed) publish(payloads [][]byte, ts uint32, key bool) {
	f.mu.Lock()
	for i, pl := range payloads {
		f.push(rtpPacket{seq: f.head, ts: ts, marker: i == len(payloads)-1, key: key && i == 0, payload: pl})
	}
	wake := f.wake
	f.wake = make(chan struct{})
	f.mu.Unlock()
	close(wake)
}

// push adds a packet, dropping the oldest packets past the feed's
// bounds: those beyond feedMaxPackets or feedMaxBytes, and those older
// than feedKeep that come before the newest keyframe. Caller holds f.mu.
func (f *feed) push(p rtpPacket) {
	for f.tail < f.head {
		old := &f.ring[f.tail&uint64(len(f.ring)-1)]
		full := f.head-f.tail >= feedMaxPackets || f.bytes+len(p.payload) > feedMaxBytes
		stale := (!f.hasKey || old.seq < f.key) && int32(p.ts-old.ts) > feedKeep
		if !full && !stale {
			break
		}
		if f.hasKey && old.seq == f.key {
			f.hasKey = false
		}
		f.bytes -= len(old.payload)
		*old = rtpPacket{}
		f.tail++
	}
	if f.head-f.tail == uint64(len(f.ring)) {
		f.grow()
	}
	if p.key {
		f.key, f.hasKey = p.seq, true
	}
	f.ring[f.head&uint64(len(f.ring)-1)] = p
	f.bytes += len(p.payload)
	f.head++
}

// grow doubles the ring. Caller holds f.mu.
func (f *feed) grow() {
	ring := make([]rtpPacket, 2*len(f.ring))
	for seq := f.tail; seq < f.head; seq++ {
		ring[seq&uint64(len(ring)-1)] = f.ring[seq&uint64(len(f.ring)-1)]
	}
	f.ring = ring
}

// cursor is a viewer's place in its feed.
type cursor struct {
	next    uint64 // seq of the next packet to send
	joined  bool
	waitKey bool  // skip packets until a keyframe's first
	skips   int64 // times the viewer fell out of the ring
}

// take copies into dst the packets after c, at most len(dst), and
// returns how many, and the channel closed when more come. A viewer
// starts at the newest keyframe held, or else at the next to come, and
// so does one that has fallen out of the ring (counted in c.skips). Once
// c has every packet of a feed that has ended, it returns why.
func (f *feed) take(c *cursor, dst []rtpPacket) (int, <-chan struct{}, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch {
	case !c.joined:
		c.joined = true
		f.start(c)
	case c.next < f.tail:
		c.skips++
		f.start(c)
	}
	n := 0
	mask := uint64(len(f.ring) - 1)
	for ; c.next < f.head && n < len(dst); c.next++ {
		p := &f.ring[c.next&mask]
		if c.waitKey {
			if !p.key {
				continue
			}
			c.waitKey = false
		}
		dst[n] = *p
		n++
	}
	if n == 0 && f.err != nil {
		return 0, nil, f.err
	}
	return n, f.wake, nil
}

// start places c at the newest keyframe held, or else at the head to
// wait for the next. Caller holds f.mu.
func (f *feed) start(c *cursor) {
	if f.hasKey {
		c.next, c.waitKey = f.key, false
		return
	}
	c.next, c.waitKey = f.head, true
}

// packet returns the packet seq, if the ring still holds it.
func (f *feed) packet(seq uint64) (rtpPacket, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if seq < f.tail || seq >= f.head {
		return rtpPacket{}, false
	}
	return f.ring[seq&uint64(len(f.ring)-1)], true
}
