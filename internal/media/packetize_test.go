package media

import (
	"bytes"
	"testing"
)

func TestNALUPacketizerHEVC(t *testing.T) {
	raw := x265HVCC(t)
	c, err := ParseHEVCConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	aud, idr, trail := []byte{0x46, 0x01, 0x50}, []byte{19 << 1, 1, 0xaf}, []byte{0x02, 0x01, 0xd0}
	z := NALUPacketizer{HEVC: true}
	// A frame before any parameter set is dropped.
	if pkts := z.Packets(nil, 0, 0, [][]byte{trail}); len(pkts) != 0 {
		t.Fatalf("%d packets before the parameter sets", len(pkts))
	}
	pkts := z.Packets(nil, 40, 80, [][]byte{aud, c.VPS[0], c.SPS[0], c.PPS[0], idr})
	if len(pkts) != 2 || !pkts[0].SeqHeader || pkts[0].Codec != CodecH265 || !bytes.Equal(pkts[0].Payload, raw) {
		t.Fatalf("packets %+v", pkts)
	}
	if f := pkts[1]; !f.Keyframe || f.DTS != 40 || f.CTS != 40 || !bytes.Equal(f.Payload, NALUsToAVCC([][]byte{idr})) {
		t.Fatalf("frame %+v", f)
	}
	// The same parameter sets again make no new sequence header.
	pkts = z.Packets(nil, 80, 80, [][]byte{c.VPS[0], c.SPS[0], c.PPS[0], idr})
	if len(pkts) != 1 || pkts[0].SeqHeader {
		t.Fatalf("repeated parameter sets: %+v", pkts)
	}
	if pkts = z.Packets(nil, 120, 120, [][]byte{trail}); len(pkts) != 1 || pkts[0].Keyframe {
		t.Fatalf("inter frame: %+v", pkts)
	}
}
