package srt

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/streamname"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStreamID(t *testing.T) {
	for _, c := range []struct {
		id, mode string
		name     streamname.Name
		params   url.Values
	}{
		{"publish:live/cam", "publish", "live/cam", url.Values{}},
		{"publish:live/cam?key=K1", "publish", "live/cam", url.Values{"key": {"K1"}}},
		{"read:live/cam", "read", "live/cam", url.Values{}},
		{"live/cam", "publish", "live/cam", url.Values{}},
		{"#!::r=live/cam,m=publish", "publish", "live/cam", url.Values{}},
		{"#!::m=publish,r=live/cam,key=K2", "publish", "live/cam", url.Values{"key": {"K2"}}},
		{"#!::r=live/cam", "read", "live/cam", url.Values{}},
	} {
		mode, name, params, err := ParseStreamID(c.id)
		if err != nil || mode != c.mode || name != c.name || params.Encode() != c.params.Encode() {
			t.Errorf("ParseStreamID(%q) = %q %q %v %v; want %q %q %v", c.id, mode, name, params, err, c.mode, c.name, c.params)
		}
	}
	for _, id := range []string{"", "publish:", "publish:live", "publish:../x", "play:live/cam", "publish:api/x", "#!::m=publish", "publish:live/a b", "publish:live/cam?key=%zz"} {
		if _, _, _, err := ParseStreamID(id); err == nil {
			t.Errorf("ParseStreamID(%q) admitted", id)
		}
	}
}

func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"publish:live/cam?key=K", "#!::r=live/cam,m=publish,u=x", "read:a/b", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		mode, name, _, err := ParseStreamID(id)
		if err != nil {
			return
		}
		if mode != "publish" && mode != "read" {
			t.Fatalf("mode %q", mode)
		}
		if _, err := streamname.Parse(string(name)); err != nil {
			t.Fatalf("name %q: %v", name, err)
		}
	})
}

// packets collects what a demuxer writes.
type packets struct{ got []media.Packet }

func (p *packets) WritePacket(pkt *media.Packet) error {
	if len(p.got) > 100000 {
		return errors.New("too many packets")
	}
	p.got = append(p.got, *pkt)
	return nil
}

func FuzzDemux(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var p packets
		demux(bytes.NewReader(data), &p, func() {})
		for _, pkt := range p.got {
			if pkt.DTS < 0 {
				t.Fatalf("negative timestamp %d", pkt.DTS)
			}
		}
	})
}

// TestDemux: an MPEG-TS file made by ffmpeg comes out as the decoder
// configurations, then frames from a keyframe on, with times from 0.
func TestDemux(t *testing.T) {
	data, err := os.ReadFile("testdata/tiny.ts")
	if err != nil {
		t.Fatal(err)
	}
	var p packets
	if err := demux(bytes.NewReader(data), &p, func() {}); !errors.Is(err, errEOF) {
		t.Fatalf("demux: %v", err)
	}
	var avc, aac bool
	video, audio := 0, 0
	for _, pkt := range p.got {
		switch {
		case pkt.SeqHeader && pkt.Codec == media.CodecH264:
			if _, err := media.ParseAVCConfig(pkt.Payload); err != nil {
				t.Errorf("avcC: %v", err)
			}
			avc = true
		case pkt.SeqHeader && pkt.Codec == media.CodecAAC:
			aac = true
		case pkt.Kind == media.KindVideo:
			if !avc || !aac {
				t.Fatal("a frame before the configurations")
			}
			if video == 0 && (!pkt.Keyframe || pkt.DTS > 200) {
				t.Errorf("first video frame: keyframe %v at %d ms", pkt.Keyframe, pkt.DTS)
			}
			if _, err := media.AVCCToNALUs(pkt.Payload); err != nil {
				t.Errorf("frame %d: %v", video, err)
			}
			video++
		case pkt.Kind == media.KindAudio:
			audio++
		}
	}
	if video != 6 || audio == 0 {
		t.Errorf("%d video frames (want 6), %d audio frames", video, audio)
	}
}
