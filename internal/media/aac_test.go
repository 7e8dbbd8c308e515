package media

import (
	"errors"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

func TestParseAACConfig(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		aot      int
		rate     int
		channels int
		profile  string
	}{
		{"LC 44.1 kHz stereo", []byte{0x12, 0x10}, 2, 44100, 2, "LC"},
		{"LC 48 kHz stereo (ffmpeg)", []byte{0x11, 0x90, 0x56, 0xe5, 0x00}, 2, 48000, 2, "LC"},
		{"LC 48 kHz mono", []byte{0x11, 0x88}, 2, 48000, 1, "LC"},
		{"LC 5.1", []byte{0x11, 0xb0}, 2, 48000, 6, "LC"},
		{"LC PCE layout", []byte{0x11, 0x80}, 2, 48000, 0, "LC"},
		{"LC explicit rate", []byte{0x17, 0x80, 0x5d, 0xc0, 0x10}, 2, 48000, 2, "LC"},
		{"HE-AAC 48 kHz stereo", []byte{0x2b, 0x11, 0x88, 0x00}, 5, 48000, 2, "HE-AAC"},
		{"HE-AACv2 48 kHz mono core", []byte{0xeb, 0x09, 0x88, 0x00}, 29, 48000, 2, "HE-AACv2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseAACConfig(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if c.ObjectType != tt.aot || c.SampleRate != tt.rate || c.Channels != tt.channels || c.Profile() != tt.profile {
				t.Errorf("got AOT %d %d Hz %d ch %q, want %d %d Hz %d ch %q",
					c.ObjectType, c.SampleRate, c.Channels, c.Profile(), tt.aot, tt.rate, tt.channels, tt.profile)
			}
			if string(c.Raw) != string(tt.in) {
				t.Errorf("Raw = %x", c.Raw)
			}
			tt.in[0] ^= 0xff
			if c.Raw[0] == tt.in[0] {
				t.Error("Raw aliases input")
			}
		})
	}
}

func TestParseAACConfigErrors(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{0x12},
		{0x0a, 0x10},             // AOT 1 (AAC Main)
		{0x16, 0x90},             // sample rate index 13 (reserved)
		{0x12, 0x40},             // channel configuration 8
		{0x17, 0x80, 0, 0, 0x10}, // explicit rate 0
		{0x12, 0x11},             // extensionFlag
	} {
		c, err := ParseAACConfig(b)
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseAACConfig(%x) = %+v, %v; want ErrInvalidConfig", b, c, err)
		}
	}
	if got := (&AACConfig{ObjectType: 1}).Profile(); got != "AOT 1" {
		t.Errorf("Profile = %q", got)
	}
}

func FuzzParseAACConfig(f *testing.F) {
	f.Add([]byte{0x12, 0x10})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseAACConfig(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		again, err := ParseAACConfig(c.Raw)
		if err != nil {
			t.Fatalf("reparse of Raw: %v", err)
		}
		if again.ObjectType != c.ObjectType || again.SampleRate != c.SampleRate || again.Channels != c.Channels ||
			again.Config != c.Config {
			t.Fatalf("Raw round trip: %+v != %+v", again, c)
		}
		if c.SampleRate <= 0 || c.Channels < 0 || c.Channels > 8 || c.Profile() == "" {
			t.Fatalf("implausible config %+v", c)
		}
		// Re-encoding may choose a different but equivalent form (a table
		// index instead of an explicit rate), so compare decoded values.
		m, err := c.Config.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(m); err != nil {
			t.Fatalf("reparse of %x: %v", m, err)
		}
		if asc != c.Config {
			t.Fatalf("Marshal round trip: %+v != %+v", asc, c.Config)
		}
	})
}
