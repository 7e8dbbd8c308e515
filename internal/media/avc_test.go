package media

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

// x264 (core 164) parameter sets for testsrc2 at 1280x720, 30 fps, High profile, level 3.1.
var (
	x264SPS = mustHex("6764001facd9405005bb011000000300100000030 3c0f1831960")
	x264PPS = mustHex("68ebe3cb22c0")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(string(bytes.ReplaceAll([]byte(s), []byte(" "), nil)))
	if err != nil {
		panic(err)
	}
	return b
}

// avcC builds a record by hand so tests do not depend on Marshal.
func avcC(profile, compat, level, lengthSizeMinusOne byte, sps, pps [][]byte, trailer ...byte) []byte {
	b := []byte{1, profile, compat, level, 0xfc | lengthSizeMinusOne, 0xe0 | byte(len(sps))}
	for _, s := range sps {
		b = append(b, byte(len(s)>>8), byte(len(s)))
		b = append(b, s...)
	}
	b = append(b, byte(len(pps)))
	for _, p := range pps {
		b = append(b, byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	return append(b, trailer...)
}

func TestParseAVCConfigX264(t *testing.T) {
	rec := avcC(0x64, 0x00, 0x1f, 3, [][]byte{x264SPS}, [][]byte{x264PPS}, 0xfd, 0xf8, 0xf8, 0x00)
	c, err := ParseAVCConfig(rec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Profile != 100 || c.Compat != 0 || c.Level != 31 || c.LengthSize != 4 {
		t.Errorf("header = %d/%d/%d/%d", c.Profile, c.Compat, c.Level, c.LengthSize)
	}
	if len(c.SPS) != 1 || !bytes.Equal(c.SPS[0], x264SPS) || len(c.PPS) != 1 || !bytes.Equal(c.PPS[0], x264PPS) {
		t.Fatalf("parameter sets = %x / %x", c.SPS, c.PPS)
	}
	// The config must not alias the input.
	rec[len(rec)-5] ^= 0xff
	if !bytes.Equal(c.PPS[0], x264PPS) {
		t.Error("PPS aliases input")
	}

	info, err := c.Info()
	if err != nil {
		t.Fatal(err)
	}
	want := VideoInfo{Width: 1280, Height: 720, FPS: 30, Profile: "High", Level: "3.1"}
	if info != want {
		t.Errorf("Info = %+v, want %+v", info, want)
	}

	// x264 writes the High-profile extension for 4:2:0 8-bit, which Marshal
	// regenerates from the SPS, so the record round-trips byte for byte.
	rec[len(rec)-5] ^= 0xff
	if got := c.Marshal(); !bytes.Equal(got, rec) {
		t.Errorf("Marshal = %x\nwant      %x", got, rec)
	}
}

func TestParseAVCConfigForms(t *testing.T) {
	sps, pps := [][]byte{x264SPS}, [][]byte{x264PPS}
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"minimal", avcC(66, 0xc0, 30, 3, sps, pps), true},
		{"no extension for High", avcC(100, 0, 31, 3, sps, pps), true},
		{"garbage trailer ignored", avcC(100, 0, 31, 3, sps, pps, 1, 2, 3), true},
		{"two-byte lengths", avcC(77, 0x40, 40, 1, sps, pps), true},
		{"many sets", avcC(100, 0, 31, 3, [][]byte{x264SPS, x264SPS}, [][]byte{x264PPS, x264PPS, x264PPS}), true},
		{"empty", nil, false},
		{"short", []byte{1, 100, 0, 31, 0xff}, false},
		{"version 0", append([]byte{0}, avcC(100, 0, 31, 3, sps, pps)[1:]...), false},
		{"length size 3", avcC(100, 0, 31, 2, sps, pps), false},
		{"no SPS", avcC(100, 0, 31, 3, nil, pps), false},
		{"no PPS", avcC(100, 0, 31, 3, sps, nil), false},
		{"empty SPS", avcC(100, 0, 31, 3, [][]byte{{}}, pps), false},
		{"missing PPS count", avcC(100, 0, 31, 3, sps, pps)[:6+2+len(x264SPS)], false},
		{"truncated SPS", avcC(100, 0, 31, 3, sps, pps)[:10], false},
		{"truncated PPS", func() []byte { b := avcC(100, 0, 31, 3, sps, pps); return b[:len(b)-1] }(), false},
		{"SPS length overflows", []byte{1, 100, 0, 31, 0xff, 0xe1, 0xff, 0xff, 0x67}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseAVCConfig(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("parsed %+v, want error", c)
				}
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseAVCConfig(c.Marshal())
			if err != nil {
				t.Fatalf("reparse: %v", err)
			}
			if !equalAVC(c, again) {
				t.Errorf("round trip: %+v != %+v", c, again)
			}
		})
	}
}

func TestAVCInfoProfiles(t *testing.T) {
	tests := []struct {
		idc     uint8
		cs1     bool
		cs3     bool
		level   uint8
		profile string
		lvl     string
	}{
		{66, true, false, 30, "Constrained Baseline", "3.0"},
		{66, false, false, 11, "Baseline", "1.1"},
		{66, false, true, 11, "Baseline", "1b"},
		{77, false, false, 40, "Main", "4.0"},
		{100, false, false, 51, "High", "5.1"},
		{100, false, true, 11, "High", "1.1"},
		{110, false, false, 9, "High 10", "1b"},
		{200, false, false, 62, "200", "6.2"},
	}
	for _, tt := range tests {
		if got := avcProfileName(tt.idc, tt.cs1, tt.cs3); got != tt.profile {
			t.Errorf("profile(%d) = %q, want %q", tt.idc, got, tt.profile)
		}
		if got := avcLevelName(tt.idc, tt.level, tt.cs3); got != tt.lvl {
			t.Errorf("level(%d, %d) = %q, want %q", tt.idc, tt.level, got, tt.lvl)
		}
	}
}

func TestAVCInfoErrors(t *testing.T) {
	for _, c := range []*AVCConfig{
		{},
		{SPS: [][]byte{{0x67}}},
		{SPS: [][]byte{x264PPS}},
	} {
		if _, err := c.Info(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Info(%x) error = %v, want ErrInvalidConfig", c.SPS, err)
		}
	}
}

func TestAVCC(t *testing.T) {
	nalus := [][]byte{{0x09, 0xf0}, {0x65, 1, 2, 3}, {0x06}}
	au := NALUsToAVCC(nalus)
	want := []byte{0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 4, 0x65, 1, 2, 3, 0, 0, 0, 1, 0x06}
	if !bytes.Equal(au, want) {
		t.Fatalf("NALUsToAVCC = %x", au)
	}
	got, err := AVCCToNALUs(au)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, nalus, bytes.Equal) {
		t.Fatalf("AVCCToNALUs = %x", got)
	}
	if &got[1][0] != &au[10] {
		t.Error("NAL units do not alias the access unit")
	}

	// Zero-length entries are skipped.
	if got, err := AVCCToNALUs(append([]byte{0, 0, 0, 0}, au...)); err != nil || len(got) != 3 {
		t.Errorf("with empty entry: %x, %v", got, err)
	}

	many := NALUsToAVCC(slices.Repeat([][]byte{{0x41}}, MaxNALUsPerAU))
	if got, err := AVCCToNALUs(many); err != nil || len(got) != MaxNALUsPerAU {
		t.Errorf("%d NAL units: %d, %v", MaxNALUsPerAU, len(got), err)
	}
	for _, bad := range [][]byte{
		nil,
		{0, 0, 0, 0},
		{0, 0, 0},
		{0, 0, 0, 5, 1, 2},
		{0xff, 0xff, 0xff, 0xff, 1},
		append(many, 0, 0, 0, 1, 0x41),
	} {
		if _, err := AVCCToNALUs(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("AVCCToNALUs(%d bytes) error = %v", len(bad), err)
		}
	}
}

func equalAVC(a, b *AVCConfig) bool {
	return a.Profile == b.Profile && a.Compat == b.Compat && a.Level == b.Level &&
		a.LengthSize == b.LengthSize &&
		slices.EqualFunc(a.SPS, b.SPS, bytes.Equal) && slices.EqualFunc(a.PPS, b.PPS, bytes.Equal)
}

func FuzzParseAVCConfig(f *testing.F) {
	f.Add(avcC(0x64, 0x00, 0x1f, 3, [][]byte{x264SPS}, [][]byte{x264PPS}, 0xfd, 0xf8, 0xf8, 0x00))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAVCConfig(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		m := c.Marshal()
		again, err := ParseAVCConfig(m)
		if err != nil {
			t.Fatalf("reparse of %x: %v", m, err)
		}
		if !equalAVC(c, again) {
			t.Fatalf("round trip: %+v != %+v", c, again)
		}
		if m2 := again.Marshal(); !bytes.Equal(m, m2) {
			t.Fatalf("Marshal not stable: %x != %x", m, m2)
		}
		if info, err := c.Info(); err == nil && (info.Width <= 0 || info.Height <= 0) {
			t.Fatalf("Info = %+v", info)
		}
	})
}

// FuzzAVCCToNALUs: an access unit splits into non-empty NAL units that
// alias it and join back to the same bytes, zero-length entries aside, or
// fails with ErrInvalidConfig.
func FuzzAVCCToNALUs(f *testing.F) {
	f.Add(NALUsToAVCC([][]byte{x264SPS, x264PPS, {0x65, 0x88, 0x84}}))
	f.Fuzz(func(t *testing.T, au []byte) {
		nalus, err := AVCCToNALUs(au)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) || nalus != nil {
				t.Fatalf("%d NAL units, %v", len(nalus), err)
			}
			return
		}
		if len(nalus) == 0 || len(nalus) > MaxNALUsPerAU {
			t.Fatalf("%d NAL units", len(nalus))
		}
		var stripped []byte // au without its zero-length entries
		for pos := 0; pos < len(au); {
			l := int(binary.BigEndian.Uint32(au[pos:]))
			if l > 0 {
				stripped = append(stripped, au[pos:pos+4+l]...)
			}
			pos += 4 + l
		}
		for _, n := range nalus {
			if len(n) == 0 || cap(n) != len(n) {
				t.Fatalf("NAL unit of %d bytes, capacity %d", len(n), cap(n))
			}
		}
		if joined := NALUsToAVCC(nalus); !bytes.Equal(joined, stripped) {
			t.Fatalf("rejoined as %x, from %x", joined, au)
		}
	})
}
