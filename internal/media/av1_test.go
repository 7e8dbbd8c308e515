package media

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
)

// svtAV1C is the av1C SVT-AV1 writes for 320x240 yuv420p, as ffmpeg put it
// in an MP4.
func svtAV1C(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/svtav1.av1C")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAV1Config(t *testing.T) {
	raw := svtAV1C(t)
	c, err := ParseAV1Config(raw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Width != 320 || info.Height != 240 || info.Profile != "Main" || info.Level != "2.0" {
		t.Errorf("info %+v", info)
	}
	if m := c.Marshal(); !bytes.Equal(m, raw) {
		t.Errorf("Marshal\n%x\nwant\n%x", m, raw)
	}
	withByte := func(i int, v byte) []byte { b := slices.Clone(raw); b[i] = v; return b }
	for name, b := range map[string][]byte{
		"empty":          nil,
		"no OBUs":        raw[:4],
		"bad marker":     withByte(0, 0x01),
		"truncated OBU":  raw[:len(raw)-1],
		"not a seq hdr":  {0x81, 0, 0x0c, 0, 0x12, 0},
		"no size field":  withByte(4, 0x08),
		"forbidden bit":  withByte(4, 0x8a),
		"bad seq header": {0x81, 0, 0x0c, 0, 0x0a, 1, 0xff},
	} {
		if c, err := ParseAV1Config(b); !errors.Is(err, ErrInvalidConfig) || c != nil {
			t.Errorf("%s: %v, %v", name, c, err)
		}
	}
}

func TestValidOBUs(t *testing.T) {
	td := []byte{0x12, 0x00}
	frame := []byte{0x32, 0x02, 0xaa, 0xbb}
	ext := []byte{0x36, 0x00, 0x01, 0xcc} // with an extension header
	for name, tt := range map[string]struct {
		b    []byte
		want bool
	}{
		"delimiter and frame": {slices.Concat(td, frame), true},
		"extension header":    {ext, true},
		"empty":               {nil, false},
		"truncated":           {slices.Concat(td, frame[:3]), false},
		"no size field":       {[]byte{0x30, 0xaa}, false},
		"forbidden bit":       {[]byte{0x92, 0x00}, false},
		"header only":         {[]byte{0x32}, false},
		"unterminated leb128": {[]byte{0x32, 0x80, 0x80}, false},
	} {
		if got := ValidOBUs(tt.b); got != tt.want {
			t.Errorf("%s: %v", name, got)
		}
	}
	obus, err := SplitOBUs(slices.Concat(td, frame))
	if err != nil || len(obus) != 2 || !bytes.Equal(obus[1], []byte{0x30, 0xaa, 0xbb}) {
		t.Errorf("SplitOBUs = %x, %v", obus, err)
	}
}

func FuzzParseAV1Config(f *testing.F) {
	f.Add(svtAV1C(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAV1Config(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		_, _ = c.Info()
		again, err := ParseAV1Config(c.Marshal())
		if err != nil || !bytes.Equal(again.SequenceHeader, c.SequenceHeader) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzValidOBUs(f *testing.F) {
	f.Add([]byte{0x12, 0x00, 0x32, 0x02, 0xaa, 0xbb})
	f.Fuzz(func(t *testing.T, b []byte) {
		if !ValidOBUs(b) {
			return
		}
		// Whatever passes must split, unless mediacommon refuses an
		// extension header.
		if obus, err := SplitOBUs(b); err != nil && !errors.Is(err, ErrInvalidConfig) || err == nil && len(obus) == 0 {
			t.Fatalf("%x: %v, %v", b, obus, err)
		}
	})
}
