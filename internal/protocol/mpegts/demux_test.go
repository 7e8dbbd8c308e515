package mpegts

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/meshcast/meshcast/internal/media"
)

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
		Demux(bytes.NewReader(data), &p, func() {})
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
	if err := Demux(bytes.NewReader(data), &p, func() {}); !errors.Is(err, io.EOF) {
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
