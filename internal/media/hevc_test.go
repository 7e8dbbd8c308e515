package media

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
)

// x265HVCC is the hvcC libx265 writes for 320x240 yuv420p at 25 fps, as
// ffmpeg put it in an MP4.
func x265HVCC(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/x265.hvcC")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseHEVCConfig(t *testing.T) {
	raw := x265HVCC(t)
	c, err := ParseHEVCConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if c.LengthSize != 4 || len(c.VPS) != 1 || len(c.SPS) != 1 || len(c.PPS) != 1 {
		t.Fatalf("config %+v", c)
	}
	if c.VPS[0][0]>>1 != 32 || c.SPS[0][0]>>1 != 33 || c.PPS[0][0]>>1 != 34 {
		t.Errorf("parameter set types %d %d %d", c.VPS[0][0]>>1, c.SPS[0][0]>>1, c.PPS[0][0]>>1)
	}
	info, err := c.Info()
	if err != nil {
		t.Fatal(err)
	}
	if want := (VideoInfo{Width: 320, Height: 240, FPS: 25, Profile: "Main", Level: "2"}); info != want {
		t.Errorf("info %+v, want %+v", info, want)
	}
	// The record rebuilt from the parameter sets is the one x265 wrote.
	if m := NewHEVCConfig(c.VPS[0], c.SPS[0], c.PPS[0]).Marshal(); !bytes.Equal(m, raw) {
		t.Errorf("Marshal\n%x\nwant\n%x", m, raw)
	}
	// The copy does not alias the input.
	raw[len(raw)-1] ^= 0xff
	if c.PPS[0][len(c.PPS[0])-1] == raw[len(raw)-1] {
		t.Error("config aliases its input")
	}
}

func TestParseHEVCConfigSkipsOtherArrays(t *testing.T) {
	raw := x265HVCC(t)
	// Append an SEI array of two units, as x265 writes with info=1.
	b := slices.Clone(raw)
	b[22]++
	b = append(b, 0x80|39, 0, 2, 0, 3, 0x4e, 0x01, 0x05, 0, 3, 0x4e, 0x01, 0x06)
	c, err := ParseHEVCConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.VPS)+len(c.SPS)+len(c.PPS) != 3 {
		t.Errorf("config %+v", c)
	}
}

func TestParseHEVCConfigErrors(t *testing.T) {
	raw := x265HVCC(t)
	withByte := func(i int, v byte) []byte { b := slices.Clone(raw); b[i] = v; return b }
	for name, b := range map[string][]byte{
		"empty":            nil,
		"short":            raw[:22],
		"version 0":        withByte(0, 0),
		"length size 3":    withByte(21, 0x0e),
		"no arrays":        withByte(22, 0),
		"more arrays":      withByte(22, 4),
		"truncated":        raw[:len(raw)-1],
		"huge array count": withByte(24, 0xff),
	} {
		if c, err := ParseHEVCConfig(b); !errors.Is(err, ErrInvalidConfig) || c != nil {
			t.Errorf("%s: %v, %v", name, c, err)
		}
	}
}

func TestHEVCKeyframe(t *testing.T) {
	for typ, want := range map[byte]bool{1: false, 16: true, 19: true, 20: true, 21: true, 22: false, 32: false} {
		if got := HEVCKeyframe([][]byte{{0x40, 1}, {typ << 1, 1}}); got != want {
			t.Errorf("NAL unit type %d: %v", typ, got)
		}
	}
}

func TestHEVCLevelName(t *testing.T) {
	for idc, want := range map[uint8]string{30: "1", 60: "2", 63: "2.1", 93: "3.1", 120: "4", 153: "5.1", 186: "6.2"} {
		if got := hevcLevelName(idc); got != want {
			t.Errorf("level %d: %q, want %q", idc, got, want)
		}
	}
}

func FuzzParseHEVCConfig(f *testing.F) {
	f.Add(x265HVCC(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseHEVCConfig(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		_, _ = c.Info()
		again, err := ParseHEVCConfig(c.Marshal())
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		same := func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }
		if again.LengthSize != c.LengthSize || !same(again.VPS, c.VPS) || !same(again.SPS, c.SPS) || !same(again.PPS, c.PPS) {
			t.Fatalf("round trip %+v != %+v", again, c)
		}
	})
}
