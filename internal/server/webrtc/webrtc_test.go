package webrtc

import (
	"bytes"
	"regexp"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/media"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSplitAnnexB(t *testing.T) {
	au := annexB([][]byte{{0x67, 1, 2, 3}, {0x68, 4}, {0x65, 5, 0, 0, 6}})
	got := splitAnnexB(au)
	if len(got) != 3 || !bytes.Equal(got[0], []byte{0x67, 1, 2, 3}) || !bytes.Equal(got[1], []byte{0x68, 4}) || !bytes.Equal(got[2], []byte{0x65, 5, 0, 0, 6}) {
		t.Errorf("split %x", got)
	}
	// Three-byte start codes, and a NAL unit without one.
	if got := splitAnnexB([]byte{0, 0, 1, 0x41, 9, 0, 0, 1, 0x41, 8}); len(got) != 2 || !bytes.Equal(got[1], []byte{0x41, 8}) {
		t.Errorf("three-byte start codes: %x", got)
	}
	if got := splitAnnexB([]byte{0x41, 7}); len(got) != 1 {
		t.Errorf("bare NAL unit: %x", got)
	}
}

// FuzzSplitAnnexB feeds what a WebRTC publisher's RTP rebuilds into access
// units through the splitter and the packetizer.
func FuzzSplitAnnexB(f *testing.F) {
	f.Add(annexB([][]byte{{0x67, 0x42, 0xc0, 0x1e, 1}, {0x68, 0xce}, {0x65, 0x88, 0x84}}))
	f.Add([]byte{0, 0, 1})
	f.Add([]byte{0, 0, 0, 1, 0x67})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		nalus := splitAnnexB(b)
		// The units are b's own bytes, in order and apart, with every start
		// code gone: none is empty or holds one, and each is preceded by
		// start codes (three bytes, or four with a leading zero) and
		// nothing else, but for bytes before the first start code, which
		// are dropped.
		pos := 0
		for i, u := range nalus {
			if len(u) == 0 {
				t.Fatalf("unit %d is empty", i)
			}
			off := offsetIn(b, u)
			if off < pos {
				t.Fatalf("unit %d at %d is not b's own, after %d", i, off, pos)
			}
			if bytes.Contains(u, []byte{0, 0, 1}) {
				t.Fatalf("unit %d %x holds a start code", i, u)
			}
			gap := b[pos:off]
			if i == 0 && len(gap) > 0 && !bytes.HasSuffix(gap, []byte{0, 0, 1}) || i > 0 && !startCodes.Match(gap) {
				t.Fatalf("unit %d preceded by %x, not a start code", i, gap)
			}
			pos = off + len(u)
		}
		if len(b) > 0 && !bytes.Contains(b, []byte{0, 0, 1}) && (len(nalus) != 1 || len(nalus[0]) != len(b)) {
			t.Fatalf("%x has no start code but split into %d units", b, len(nalus))
		}
		// Units that do not end in a zero byte come back as they were
		// through annexB.
		var clean [][]byte
		for _, u := range nalus {
			if u[len(u)-1] != 0 {
				clean = append(clean, u)
			}
		}
		again := splitAnnexB(annexB(clean))
		if len(again) != len(clean) {
			t.Fatalf("%d units through annexB came back as %d", len(clean), len(again))
		}
		for i := range clean {
			if !bytes.Equal(again[i], clean[i]) {
				t.Fatalf("unit %d %x came back as %x", i, clean[i], again[i])
			}
		}
		var z media.NALUPacketizer
		for _, p := range z.Packets(nil, 0, 0, nalus) {
			if p.SeqHeader {
				if _, err := media.ParseAVCConfig(p.Payload); err != nil && len(p.Payload) < 7 {
					t.Fatalf("sequence header %x", p.Payload)
				}
			}
		}
	})
}

// startCodes matches one or more Annex B start codes.
var startCodes = regexp.MustCompile(`^(\x00?\x00\x00\x01)+$`)

// offsetIn returns where sub, a subslice of b, starts in b; -1 if it is
// not one.
func offsetIn(b, sub []byte) int {
	for i := range len(b) - len(sub) + 1 {
		if len(sub) > 0 && &b[i] == &sub[0] {
			return i
		}
	}
	return -1
}
