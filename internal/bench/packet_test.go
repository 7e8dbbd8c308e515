package bench

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// testPlayer is a player of a run whose measuring window started an hour
// ago, so everything it receives now counts.
func testPlayer(probe bool) *player {
	r := &runner{pub: &publisher{sent: &sendTable{start: time.Now().Add(-time.Hour)}}}
	r.winStart.Store(time.Now().Add(-time.Hour).UnixNano())
	return &player{r: r, t: &tally{}, probe: probe}
}

// TestLossCounter: packets are expected from the first to the highest
// sequence number received in the window, across the 16-bit wrap; a
// retransmission fills its gap, even just after the window; a duplicate
// counts once; nothing after the window is expected.
func TestLossCounter(t *testing.T) {
	p := testPlayer(false)
	var l lossCounter
	now := time.Now()
	var ext int64
	started := false
	add := func(s uint16) {
		seq := int64(s)
		if started {
			seq = ext + int64(int16(s-uint16(ext)))
		}
		if !started || seq > ext {
			ext, started = seq, true
		}
		l.add(p, seq, now)
	}
	for _, s := range []uint16{65530, 65531, 65533, 65535, 2, 3, 3, 65534} {
		add(s)
	}
	// 65530 to 3 across the wrap: 10 expected; 65532, 0 and 1 missing.
	if e, lost := p.t.pktsExpected.Load(), p.t.pktsLost.Load(); e != 10 || lost != 3 {
		t.Errorf("expected %d lost %d, want 10 and 3", e, lost)
	}
	p.r.winEnd.Store(time.Now().UnixNano())
	now = time.Now().Add(time.Second)
	add(0)  // a retransmission after the window, of a packet sent in it
	add(10) // sent after the window
	if e, lost := p.t.pktsExpected.Load(), p.t.pktsLost.Load(); e != 10 || lost != 2 {
		t.Errorf("after the window: expected %d lost %d, want 10 and 2", e, lost)
	}
}

// TestLossCounterBeforeWindow: packets before the window are not counted.
func TestLossCounterBeforeWindow(t *testing.T) {
	p := testPlayer(false)
	p.r.winStart.Store(time.Now().Add(time.Hour).UnixNano())
	var l lossCounter
	l.add(p, 1, time.Now())
	l.add(p, 5, time.Now())
	if e := p.t.pktsExpected.Load(); e != 0 {
		t.Errorf("%d packets expected before the window", e)
	}
}

// marker returns the SEI NAL unit the publisher puts first in frame seq.
func marker(seq uint32) []byte {
	b := appendMarked(nil, []byte{0x17, 1, 0, 0, 0}, seq)
	return b[5+4:]
}

// TestH264Frame: the frame number is found in an SEI packet or a STAP-A,
// and an IDR picture starts in a single NAL unit packet, the first
// fragment of an FU-A or a STAP-A.
func TestH264Frame(t *testing.T) {
	stap := []byte{nalSTAPA}
	for _, nal := range [][]byte{{0x67, 1, 2}, {0x68, 3}, marker(42), {0x65, 9, 9}} {
		stap = binary.BigEndian.AppendUint16(stap, uint16(len(nal)))
		stap = append(stap, nal...)
	}
	for _, c := range []struct {
		name        string
		pl          []byte
		seq         uint32
		marked, idr bool
	}{
		{"SEI", marker(7), 7, true, false},
		{"STAP-A", stap, 42, true, true},
		{"IDR", []byte{0x65, 0x88}, 0, false, true},
		{"FU-A start", []byte{0x7c, 0x85, 0}, 0, false, true},
		{"FU-A middle", []byte{0x7c, 0x05, 0}, 0, false, false},
		{"P slice", []byte{0x41, 0x9a}, 0, false, false},
	} {
		seq, marked, idr := h264Frame(c.pl)
		if seq != c.seq || marked != c.marked || idr != c.idr {
			t.Errorf("%s: %d %v %v, want %d %v %v", c.name, seq, marked, idr, c.seq, c.marked, c.idr)
		}
	}
}

// TestRTPPayload: the payload follows the CSRCs and the header
// extension, and stops at the padding.
func TestRTPPayload(t *testing.T) {
	b := []byte{0xb1, 102, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 1, // V=2 P X CC=1
		0, 0, 0, 2, // CSRC
		0xbe, 0xde, 0, 1, 1, 2, 3, 4, // one-word extension
		0x65, 0x88, 0, 2} // payload, then two bytes of padding
	seq, pl, ok := rtpPayload(b)
	if !ok || seq != 0x1234 || !bytes.Equal(pl, []byte{0x65, 0x88}) {
		t.Errorf("%v %#x %x", ok, seq, pl)
	}
}

// tsPackets puts a PES packet of stream sid carrying es into 188-byte TS
// packets of PID pid, the first with the random access indicator if key.
func tsPackets(pid uint16, sid byte, es []byte, key bool) []byte {
	pes := append([]byte{0, 0, 1, sid, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1}, es...)
	var out []byte
	for first := true; len(pes) > 0; first = false {
		hdr := []byte{0x47, byte(pid >> 8), byte(pid), 0x10}
		if first {
			hdr[1] |= 0x40
		}
		var af []byte
		if first && key {
			af = []byte{1, 0x40}
		}
		room := 188 - 4 - len(af)
		if len(pes) < room {
			// Stuffing in the adaptation field fills the packet.
			n := room - len(pes)
			if af == nil {
				af = []byte{0}
				n--
			}
			if n > 0 && len(af) == 1 {
				af = append(af, 0)
				n--
			}
			af = append(af, bytes.Repeat([]byte{0xff}, n)...)
			af[0] = byte(len(af) - 1)
			room = len(pes)
		}
		if af != nil {
			hdr[3] |= 0x20
		}
		out = append(append(append(out, hdr...), af...), pes[:room]...)
		pes = pes[room:]
	}
	return out
}

// TestTSReader: the first keyframe is the first picture, and frame
// numbers are found in a frame's first TS packet or across its first
// two; audio and other packets are skipped; SRT payloads that split TS
// packets are put back together.
func TestTSReader(t *testing.T) {
	p := testPlayer(true)
	now := time.Now()
	for seq := uint32(1); seq <= 3; seq++ {
		p.r.pub.sent.put(seq, now.Add(-10*time.Millisecond))
	}
	aud := []byte{0, 0, 0, 1, 9, 0xf0}
	var stream []byte
	// Frame 1: a keyframe whose marker starts in its first packet (182
	// bytes of payload after the adaptation field) and ends in the
	// second: its SEI NAL unit starts 6 bytes before that packet's end.
	es := append(append([]byte{}, aud...), 0, 0, 0, 1, 0x67)
	es = append(es, bytes.Repeat([]byte{0x11}, 182-14-len(es)-3-6)...)
	es = append(append(es, 0, 0, 1), marker(1)...)
	es = append(es, bytes.Repeat([]byte{0x22}, 300)...)
	stream = append(stream, tsPackets(256, 0xe0, es, true)...)
	// An audio PES packet, which has the random access indicator too.
	stream = append(stream, tsPackets(257, 0xc0, []byte{0xff, 0xf1}, true)...)
	// Frames 2 and 3, marked in their first packet.
	for seq := uint32(2); seq <= 3; seq++ {
		es := append(append(append([]byte{}, aud...), 0, 0, 1), marker(seq)...)
		stream = append(stream, tsPackets(256, 0xe0, append(es, 0, 0, 1, 0x41, 1, 2, 3), false)...)
	}
	ts := tsReader{videoPID: -1}
	// SRT payloads of 1000 bytes: TS packets split between them.
	for b := stream; len(b) > 0; {
		n := min(1000, len(b))
		ts.feed(p, b[:n], now)
		b = b[n:]
	}
	if p.first.IsZero() || p.t.ttff.n.Load() != 1 {
		t.Errorf("no first picture")
	}
	if got := p.t.windowFrames.Load(); got != 3 {
		t.Errorf("%d frames found, want 3", got)
	}
	if got := p.t.latency.n.Load(); got != 3 {
		t.Errorf("%d latencies measured, want 3", got)
	}
}
