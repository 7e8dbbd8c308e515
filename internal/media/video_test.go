package media

import (
	"bytes"
	"slices"
	"testing"
)

func TestWithParamSets(t *testing.T) {
	avc := &VideoConfig{Codec: CodecH264, ParamSets: [][]byte{{0x67, 1}, {0x68, 2}}}
	sps, pps := avc.ParamSets[0], avc.ParamSets[1]
	aud, idr, slice, sei := []byte{0x09, 0xf0}, []byte{0x65, 3}, []byte{0x41, 4}, []byte{0x06, 5}
	hevc := &VideoConfig{Codec: CodecH265, ParamSets: [][]byte{{0x40, 1}, {0x42, 1}, {0x44, 1}}}
	haud, cra, trail := []byte{0x46, 0x01}, []byte{21 << 1, 1}, []byte{0x02, 1}
	av1 := &VideoConfig{Codec: CodecAV1, AV1: &AV1Config{SequenceHeader: []byte{0x08, 0xaa}}, ParamSets: [][]byte{{0x08, 0xaa}}}
	td, frame := []byte{0x10}, []byte{0x30, 0xbb}
	for _, tc := range []struct {
		name     string
		c        *VideoConfig
		key      bool
		in, want [][]byte
	}{
		{"IDR gets parameter sets", avc, false, [][]byte{sei, idr}, [][]byte{sps, pps, sei, idr}},
		{"after a delimiter", avc, false, [][]byte{aud, idr}, [][]byte{aud, sps, pps, idr}},
		{"non-IDR unchanged", avc, false, [][]byte{slice}, [][]byte{slice}},
		{"marked keyframe", avc, true, [][]byte{slice}, [][]byte{sps, pps, slice}},
		{"in-band SPS replaced", avc, false, [][]byte{{0x67, 9}, {0x68, 9}, idr}, [][]byte{sps, pps, idr}},
		{"in-band SPS dropped from inter frames", avc, false, [][]byte{{0x67, 9}, slice}, [][]byte{slice}},
		{"delimiter only", avc, true, [][]byte{aud}, [][]byte{aud, sps, pps}},
		{"HEVC CRA", hevc, false, [][]byte{haud, cra}, [][]byte{haud, {0x40, 1}, {0x42, 1}, {0x44, 1}, cra}},
		{"HEVC trailing picture", hevc, false, [][]byte{trail}, [][]byte{trail}},
		{"HEVC in-band VPS replaced", hevc, false, [][]byte{{0x40, 9}, cra}, [][]byte{{0x40, 1}, {0x42, 1}, {0x44, 1}, cra}},
		{"AV1 keyframe", av1, true, [][]byte{td, frame}, [][]byte{td, {0x08, 0xaa}, frame}},
		{"AV1 inter frame", av1, false, [][]byte{td, frame}, [][]byte{td, frame}},
		{"AV1 in-band sequence header replaced", av1, true, [][]byte{td, {0x08, 0xcc}, frame}, [][]byte{td, {0x08, 0xaa}, frame}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got := tc.c.WithParamSets(tc.in, tc.key)
			if !slices.EqualFunc(got, tc.want, bytes.Equal) {
				t.Fatalf("got %x, want %x", got, tc.want)
			}
			if !slices.EqualFunc(in, tc.in, bytes.Equal) {
				t.Fatal("input modified")
			}
		})
	}
}

// Frames with nothing to add or drop, most of them, cost no allocation.
func TestWithParamSetsInterFrameAllocates(t *testing.T) {
	c := &VideoConfig{Codec: CodecH265, ParamSets: [][]byte{{0x40, 1}, {0x42, 1}, {0x44, 1}}}
	units := [][]byte{{0x46, 0x01}, {0x02, 1}}
	if n := testing.AllocsPerRun(100, func() { c.WithParamSets(units, false) }); n != 0 {
		t.Errorf("%v allocations per inter frame", n)
	}
}

func TestParseVideoConfig(t *testing.T) {
	for _, tc := range []struct {
		codec  Codec
		config []byte
		want   string
	}{
		{CodecH265, x265HVCC(t), "hevc 320x240 Main 2"},
		{CodecAV1, svtAV1C(t), "av1 320x240 Main 2.0"},
	} {
		c, err := ParseVideoConfig(tc.codec, tc.config)
		if err != nil {
			t.Fatal(err)
		}
		if c.String() != tc.want || len(c.ParamSets) == 0 {
			t.Errorf("%s: %q with %d parameter sets, want %q", tc.codec, c, len(c.ParamSets), tc.want)
		}
	}
	if _, err := ParseVideoConfig(CodecAAC, []byte{0x12, 0x10}); err == nil {
		t.Error("AAC taken as video")
	}
	if _, err := ParseVideoConfig(CodecH264, x265HVCC(t)); err == nil {
		t.Error("hvcC taken as avcC")
	}
}
