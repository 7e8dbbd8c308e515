package webrtc

import (
	"bytes"
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
		n := 0
		for _, u := range nalus {
			n += len(u)
		}
		if n > len(b) {
			t.Fatalf("%d bytes of NAL units from %d", n, len(b))
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
