package webrtc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Viewer limits.
const (
	// sendBatch bounds the packets a viewer takes from its feed at once.
	sendBatch = 32
	// maxResend bounds the packets one NACK (RFC 4585 §6.2.1) resends.
	maxResend = 64
)

// videoTrack is a WHEP viewer's H.264 track: pion binds it to the
// viewer's RTP sender (Bind), and the viewer writes its feed's packets
// to what it was bound to, with the sender's SSRC and payload type.
type videoTrack struct {
	mu   sync.Mutex
	w    webrtc.TrackLocalWriter // nil until bound
	ssrc uint32
	pt   uint8
}

var _ webrtc.TrackLocal = (*videoTrack)(nil)

// Bind implements webrtc.TrackLocal: the viewer takes the H.264 the
// server offers.
func (t *videoTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) {
			t.mu.Lock()
			t.w, t.ssrc, t.pt = ctx.WriteStream(), uint32(ctx.SSRC()), uint8(c.PayloadType)
			t.mu.Unlock()
			return c, nil
		}
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

// Unbind implements webrtc.TrackLocal.
func (t *videoTrack) Unbind(webrtc.TrackLocalContext) error {
	t.mu.Lock()
	t.w = nil
	t.mu.Unlock()
	return nil
}

// binding is what the track is bound to: nil before Bind and after
// Unbind.
func (t *videoTrack) binding() (webrtc.TrackLocalWriter, uint32, uint8) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.w, t.ssrc, t.pt
}

// ID implements webrtc.TrackLocal.
func (t *videoTrack) ID() string { return "video" }

// RID implements webrtc.TrackLocal.
func (t *videoTrack) RID() string { return "" }

// StreamID implements webrtc.TrackLocal: the audio's too, so players
// sync them as one stream.
func (t *videoTrack) StreamID() string { return "meshcast" }

// Kind implements webrtc.TrackLocal.
func (t *videoTrack) Kind() webrtc.RTPCodecType { return webrtc.RTPCodecTypeVideo }

// videoSender sends a stream's feed to one viewer and answers the
// viewer's RTCP. Its sequence numbers are the feed's plus an offset of
// its own, which moves when the viewer skips packets so that it sees no
// gap; NACKs are mapped back through it to the feed's packets.
type videoSender struct {
	f     *feed
	track *videoTrack
	tsOff uint32 // added to the feed's RTP timestamps

	mu     sync.Mutex
	offset uint16 // the viewer's sequence number is the feed's plus offset
	since  uint64 // the feed's first packet sent at this offset
	last   uint64 // the feed's newest packet sent
	sent   bool

	cur cursor // the sending goroutine's

	nacked, resent, plis, firs atomic.Int64
}

func newVideoSender(f *feed, track *videoTrack) *videoSender {
	var r [6]byte
	rand.Read(r[:])
	return &videoSender{f: f, track: track, offset: binary.BigEndian.Uint16(r[:2]), tsOff: binary.BigEndian.Uint32(r[2:])}
}

// send sends the feed to the viewer, and its Opus if audio is set, until
// ctx ends, the feed does (its reason) or the connection fails. One
// goroutine sends both, woken once per frame of each.
func (v *videoSender) send(ctx context.Context, audio *opusSender) error {
	var opus <-chan opusFrame
	if audio != nil {
		opus = audio.sub.ch
	}
	w, ssrc, pt := v.track.binding() // nil: the offer took no video
	var batch [sendBatch]rtpPacket
	hdr := rtp.Header{Version: 2, SSRC: ssrc, PayloadType: pt}
	for {
		var n int
		var wake <-chan struct{}
		if w != nil {
			var err error
			if n, wake, err = v.f.take(&v.cur, batch[:]); n == 0 && err != nil {
				return err
			}
		}
		if n == 0 {
			select {
			case <-wake:
			case f := <-opus:
				audio.write(f)
			case <-ctx.Done():
				return nil
			}
			continue
		}
		off := v.advance(batch[0].seq, batch[n-1].seq)
		for i := range batch[:n] {
			p := &batch[i]
			hdr.SequenceNumber = uint16(p.seq) + off
			hdr.Timestamp = p.ts + v.tsOff
			hdr.Marker = p.marker
			if _, err := w.WriteRTP(&hdr, p.payload); err != nil {
				return err
			}
		}
		clear(batch[:n])
		if ctx.Err() != nil {
			return nil
		}
	}
}

// advance records that the feed's packets first to last go out next, and
// returns the offset they go with: moved if first does not follow the
// last packet sent, so the viewer's sequence numbers have no gap.
func (v *videoSender) advance(first, last uint64) uint16 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.sent || first != v.last+1 {
		if v.sent {
			v.offset += uint16(v.last+1) - uint16(first)
		}
		v.since, v.sent = first, true
	}
	v.last = last
	return v.offset
}

// feedSeq maps a sequence number the viewer was sent to the feed's, if it
// was sent at the current offset.
func (v *videoSender) feedSeq(seq uint16) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.sent {
		return 0, false
	}
	back := uint64(uint16(v.last) + v.offset - seq)
	if back >= 1<<15 || back > v.last-v.since {
		return 0, false
	}
	return v.last - back, true
}

// readRTCP reads the viewer's RTCP for the video until the connection
// closes: NACKs are answered from the feed, PLIs and FIRs counted (a
// keyframe cannot be asked of the publisher).
func (v *videoSender) readRTCP(sender *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	var nack rtcp.TransportLayerNack
	var hdr rtp.Header
	for {
		n, _, err := sender.Read(buf)
		if err != nil {
			return
		}
		for b := buf[:n]; len(b) >= 4; {
			var h rtcp.Header
			if h.Unmarshal(b) != nil {
				break
			}
			size := 4 * (int(h.Length) + 1)
			if size > len(b) {
				break
			}
			pkt := b[:size]
			b = b[size:]
			switch {
			case h.Type == rtcp.TypeTransportSpecificFeedback && h.Count == rtcp.FormatTLN:
				nack.Nacks = nack.Nacks[:0]
				if nack.Unmarshal(pkt) == nil {
					v.resend(nack.Nacks, &hdr)
				}
			case h.Type == rtcp.TypePayloadSpecificFeedback && h.Count == rtcp.FormatPLI:
				v.plis.Add(1)
			case h.Type == rtcp.TypePayloadSpecificFeedback && h.Count == rtcp.FormatFIR:
				v.firs.Add(1)
			}
		}
	}
}

// resend sends again the packets a NACK asks for that the feed still
// holds, at most maxResend.
func (v *videoSender) resend(pairs []rtcp.NackPair, hdr *rtp.Header) {
	w, ssrc, pt := v.track.binding()
	if w == nil {
		return
	}
	hdr.Version, hdr.SSRC, hdr.PayloadType = 2, ssrc, pt
	budget := maxResend
	for _, pair := range pairs {
		lost := uint32(pair.LostPackets)<<1 | 1 // bit 0: PacketID itself
		for i := uint16(0); lost != 0 && budget > 0; i, lost = i+1, lost>>1 {
			if lost&1 == 0 {
				continue
			}
			seq := pair.PacketID + i
			v.nacked.Add(1)
			fs, ok := v.feedSeq(seq)
			if !ok {
				continue
			}
			p, ok := v.f.packet(fs)
			if !ok {
				continue
			}
			hdr.SequenceNumber, hdr.Timestamp, hdr.Marker = seq, p.ts+v.tsOff, p.marker
			if _, err := w.WriteRTP(hdr, p.payload); err != nil {
				return
			}
			v.resent.Add(1)
			budget--
		}
	}
}
