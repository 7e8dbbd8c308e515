package webrtc

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/meshcast/meshcast/internal/media"
)

// x264's parameter sets for testsrc2 at 1280x720, 30 fps, High profile.
var (
	testSPS = mustHex("6764001facd9405005bb0110000003001000000303c0f1831960")
	testPPS = mustHex("68ebe3cb22c0")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// testFrames makes n access units of H.264 as a publisher sends them: the
// decoder configuration first, a keyframe (IDR, large enough to be
// fragmented) every keyEvery frames, P frames between, 33 ms apart. Each
// frame's slice carries its number, so a player's frames can be told
// apart.
func testFrames(n, keyEvery int) []*media.Packet {
	var z media.NALUPacketizer
	var out []*media.Packet
	for i := range n {
		var au [][]byte
		if i%keyEvery == 0 {
			idr := make([]byte, 3000)
			idr[0] = 0x65
			for j := 1; j < len(idr); j++ {
				idr[j] = byte(i + j)
			}
			au = [][]byte{testSPS, testPPS, idr}
		} else {
			au = [][]byte{{0x41, 0x9a, byte(i >> 8), byte(i), 7, 7, 7}}
		}
		dts := int64(i) * 33
		out = z.Packets(out, dts, dts, au)
	}
	return out
}

// depacketize rebuilds the access units of a viewer's RTP packets, in
// order and without loss, as Annex B.
func depacketize(t *testing.T, pkts []*rtp.Packet) [][]byte {
	t.Helper()
	var aus [][]byte
	var d codecs.H264Packet
	var au []byte
	for _, p := range pkts {
		b, err := d.Unmarshal(p.Payload)
		if err != nil {
			t.Fatalf("packet %d: %v", p.SequenceNumber, err)
		}
		au = append(au, b...)
		if p.Marker {
			aus = append(aus, au)
			au = nil
		}
	}
	return aus
}

// wantAU is the Annex B access unit a viewer should get for frame p:
// its NAL units, with the parameter sets before a keyframe's.
func wantAU(t *testing.T, cfg *media.VideoConfig, p *media.Packet) []byte {
	t.Helper()
	nalus, err := media.AVCCToNALUs(p.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return annexB(cfg.WithParamSets(nalus, p.Keyframe))
}

// TestPacketizer: a stream's frames become RTP payloads that rebuild
// them, from the first keyframe on, with the parameter sets before each
// keyframe, the marker on each frame's last packet, no payload over the
// MTU, and timestamps 90 kHz apart as the frames' DTS are.
func TestPacketizer(t *testing.T) {
	frames := testFrames(70, 30)
	cfg, err := media.ParseVideoConfig(media.CodecH264, frames[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	var z packetizer
	z.waitKey = true
	var pkts []*rtp.Packet
	var want [][]byte
	var stamps []uint32
	// Frames before the decoder configuration, and before a keyframe,
	// are dropped.
	for _, p := range append([]*media.Packet{frames[2]}, frames...) {
		payloads, ts, key := z.packetize(p)
		if len(payloads) == 0 {
			continue
		}
		if key != p.Keyframe {
			t.Errorf("frame at %d ms: key %v, want %v", p.DTS, key, p.Keyframe)
		}
		want = append(want, wantAU(t, cfg, p))
		stamps = append(stamps, ts)
		for i, pl := range payloads {
			if len(pl) > rtpPayloadMTU {
				t.Errorf("a %d-byte payload, over the MTU", len(pl))
			}
			pkts = append(pkts, &rtp.Packet{Header: rtp.Header{Marker: i == len(payloads)-1}, Payload: pl})
		}
	}
	got := depacketize(t, pkts)
	if len(got) != 70 || len(want) != 70 {
		t.Fatalf("%d access units rebuilt, want 70", len(got))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("access unit %d: got %x..., want %x...", i, got[i][:min(len(got[i]), 32)], want[i][:min(len(want[i]), 32)])
		}
	}
	// The keyframe's parameter sets go in one STAP-A, ahead of its slice.
	if pkts[0].Payload[0]&0x1f != 24 {
		t.Errorf("a keyframe's first packet is NAL unit type %d, want STAP-A (24)", pkts[0].Payload[0]&0x1f)
	}
	for i := 1; i < len(stamps); i++ {
		if d := stamps[i] - stamps[i-1]; d != 33*90 {
			t.Fatalf("frame %d is %d ticks after the one before, want %d", i, d, 33*90)
		}
	}
	// A frame whose DTS does not advance still does.
	p := *frames[40]
	payloads, ts, _ := z.packetize(&p)
	if len(payloads) == 0 || ts-stamps[len(stamps)-1] != feedFrameStep*90 {
		t.Errorf("a frame with the last DTS again is %d ticks on, want %d", ts-stamps[len(stamps)-1], feedFrameStep*90)
	}
}

// testFeed is a feed without a stream, for the ring's tests.
func testFeed() *feed {
	return &feed{ring: make([]rtpPacket, feedMinPackets), wake: make(chan struct{})}
}

// pushFrame adds an access unit of n packets of size bytes each at ts.
func pushFrame(f *feed, n, size int, ts uint32, key bool) {
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = make([]byte, size)
	}
	f.publish(payloads, ts, key)
}

// TestFeedRing: the ring keeps the newest keyframe's group of pictures
// and 2 s, within its bounds in packets and bytes; a viewer starts at the
// newest keyframe it holds, or else waits for the next; one that falls
// out of the ring jumps to the newest keyframe and counts it.
func TestFeedRing(t *testing.T) {
	t.Run("keeps the GOP and 2 s", func(t *testing.T) {
		f := testFeed()
		// 10 s of 30 fps, 3 packets a frame, a keyframe every 4 s.
		for i := range 300 {
			pushFrame(f, 3, 100, uint32(i*3000), i%120 == 0)
		}
		// The newest keyframe, frame 240, is within the last 2 s: the
		// ring starts 2 s before the newest frame, at frame 239.
		if !f.hasKey || f.key != 240*3 || f.tail != 239*3 {
			t.Errorf("ring holds %d..%d, keyframe %d (%v); want it to start 2 s back, at %d", f.tail, f.head, f.key, f.hasKey, 239*3)
		}
		for i := 300; i < 330; i++ {
			pushFrame(f, 3, 100, uint32(i*3000), false)
		}
		// The keyframe is kept though older than 2 s.
		if f.tail != 720 || f.bytes != int(f.head-f.tail)*100 {
			t.Errorf("ring holds %d..%d (%d bytes), want it from the keyframe, 720", f.tail, f.head, f.bytes)
		}
		pushFrame(f, 3, 100, 330*3000, true)
		for i := 331; i < 400; i++ {
			pushFrame(f, 3, 100, uint32(i*3000), false)
		}
		// A new keyframe: the GOP before it goes.
		if f.tail != 330*3 {
			t.Errorf("ring starts at %d, want the new keyframe, %d", f.tail, 330*3)
		}
	})
	t.Run("bounds", func(t *testing.T) {
		f := testFeed()
		pushFrame(f, 1, 100, 0, true)
		for i := 1; i < feedMaxPackets+1000; i++ {
			pushFrame(f, 1, 100, uint32(i), false)
		}
		if n := f.head - f.tail; n != feedMaxPackets || len(f.ring) != feedMaxPackets || f.hasKey {
			t.Errorf("ring holds %d packets in %d slots, keyframe %v; want %d, the keyframe gone", n, len(f.ring), f.hasKey, feedMaxPackets)
		}
		f = testFeed()
		pushFrame(f, 1000, 1188, 0, true)
		pushFrame(f, 7000, 1188, 3000, false)
		if f.bytes > feedMaxBytes || f.bytes < feedMaxBytes-1188 {
			t.Errorf("ring holds %d bytes, want at most and about %d", f.bytes, feedMaxBytes)
		}
	})
	t.Run("viewers", func(t *testing.T) {
		f := testFeed()
		var late cursor
		dst := make([]rtpPacket, 8)
		// Before any keyframe, a viewer waits for one.
		pushFrame(f, 2, 10, 0, false)
		if n, _, _ := f.take(&late, dst); n != 0 || !late.waitKey {
			t.Fatalf("took %d packets before a keyframe", n)
		}
		pushFrame(f, 2, 10, 3000, false)
		pushFrame(f, 3, 10, 6000, true)
		if n, _, _ := f.take(&late, dst); n != 3 || !dst[0].key || dst[0].seq != 4 || !dst[2].marker {
			t.Fatalf("the waiting viewer took %d packets from %d (key %v), want the keyframe's 3 from 4", n, dst[0].seq, dst[0].key)
		}
		pushFrame(f, 2, 10, 9000, false)
		// A new viewer starts at the newest keyframe held.
		var c cursor
		n, wake, _ := f.take(&c, dst)
		if n != 5 || dst[0].seq != 4 {
			t.Fatalf("a new viewer took %d packets from %d, want 5 from the keyframe, 4", n, dst[0].seq)
		}
		select {
		case <-wake:
			t.Fatal("woken with nothing new")
		default:
		}
		pushFrame(f, 1, 10, 12000, false)
		select {
		case <-wake:
		default:
			t.Fatal("not woken by a new frame")
		}
		// Falling out of the ring: to the newest keyframe, counted.
		for i := range feedMaxPackets + 100 {
			pushFrame(f, 1, 10, uint32(15000+i), i == feedMaxPackets)
		}
		n, _, _ = f.take(&c, dst)
		if c.skips != 1 || n != 8 || dst[0].seq != f.key || !dst[0].key {
			t.Fatalf("the slow viewer took %d from %d after %d skips, want the keyframe %d after 1", n, dst[0].seq, c.skips, f.key)
		}
	})
}

// TestVideoSenderSeq: a viewer's sequence numbers have no gap when it
// skips packets of the feed, and its NACKs name the packets it was sent,
// across the 16-bit wrap; those sent before a skip are no longer asked
// for.
func TestVideoSenderSeq(t *testing.T) {
	v := &videoSender{offset: 0xfff0}
	off := v.advance(100, 131) // sent as 0x10054 ...
	first := uint16(100) + off
	if fs, ok := v.feedSeq(first + 31); !ok || fs != 131 {
		t.Errorf("seq %d maps to %d %v, want 131", first+31, fs, ok)
	}
	if fs, ok := v.feedSeq(first); !ok || fs != 100 {
		t.Errorf("seq %d maps to %d %v, want 100", first, fs, ok)
	}
	if _, ok := v.feedSeq(first - 1); ok {
		t.Errorf("seq %d, never sent, maps to a packet", first-1)
	}
	if _, ok := v.feedSeq(first + 32); ok {
		t.Errorf("seq %d, not sent yet, maps to a packet", first+32)
	}
	// The viewer skips to packet 1000: its next sequence number follows
	// its last.
	off2 := v.advance(1000, 1010)
	if got := uint16(1000) + off2; got != first+32 {
		t.Errorf("after a skip, seq %d, want %d", got, first+32)
	}
	if fs, ok := v.feedSeq(first + 35); !ok || fs != 1003 {
		t.Errorf("seq %d maps to %d %v, want 1003", first+35, fs, ok)
	}
	if _, ok := v.feedSeq(first + 31); ok {
		t.Errorf("seq %d, sent before the skip, maps to a packet", first+31)
	}
}

// TestResendBudget: one NACK resends at most maxResend packets, and
// names them by PacketID and bitmap (RFC 4585 §6.2.1).
func TestResendBudget(t *testing.T) {
	f := testFeed()
	pushFrame(f, 200, 10, 0, true)
	w := &countingWriter{}
	track := &videoTrack{w: w, ssrc: 1, pt: 102}
	v := newVideoSender(f, track)
	off := v.advance(0, 199)
	var hdr rtp.Header
	// Bit i of the bitmap is PacketID+i+1.
	v.resend([]rtcp.NackPair{{PacketID: 10 + off, LostPackets: 0b101}}, &hdr)
	if len(w.seqs) != 3 || w.seqs[0] != 10+off || w.seqs[1] != 11+off || w.seqs[2] != 13+off {
		t.Errorf("resent %v, want %d, %d, %d", w.seqs, 10+off, 11+off, 13+off)
	}
	w.seqs = nil
	var pairs []rtcp.NackPair
	for i := range 10 {
		pairs = append(pairs, rtcp.NackPair{PacketID: uint16(i*17) + off, LostPackets: 0xffff})
	}
	v.resend(pairs, &hdr)
	if len(w.seqs) != maxResend || v.nacked.Load() != 3+maxResend {
		t.Errorf("one NACK of 170 packets resent %d (%d asked for), want %d", len(w.seqs), v.nacked.Load(), maxResend)
	}
}

// countingWriter is a viewer's RTP sender that records what it is sent.
type countingWriter struct {
	seqs  []uint16
	bytes int
}

func (w *countingWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.seqs = append(w.seqs, h.SequenceNumber)
	w.bytes += len(payload)
	return len(payload), nil
}

func (w *countingWriter) Write(b []byte) (int, error) { return len(b), nil }
