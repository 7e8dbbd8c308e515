package mpegts

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/meshcast/meshcast/internal/media"
)

// collected keeps what Demux or a test writes.
type collected []media.Packet

func (c *collected) WritePacket(p *media.Packet) error {
	q := *p
	q.Payload = bytes.Clone(p.Payload)
	*c = append(*c, q)
	return nil
}

// TestMuxRoundTrip: an ffmpeg MPEG-TS file demuxed, muxed again and
// demuxed comes back with the same decoder configurations, frames and
// times; frames before the first keyframe and codecs MPEG-TS does not carry
// here are left out.
func TestMuxRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/tiny.ts")
	if err != nil {
		t.Fatal(err)
	}
	var in collected
	if err := Demux(bytes.NewReader(data), &in, func() {}); !errors.Is(err, io.EOF) {
		t.Fatalf("demux: %v", err)
	}
	var buf bytes.Buffer
	m := &Muxer{W: &buf}
	var first []media.Packet // configurations, then a frame that can't start a program
	var rest []media.Packet
	for _, p := range in {
		if p.SeqHeader {
			first = append(first, p)
		} else {
			rest = append(rest, p)
		}
	}
	first = append(first,
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Payload: []byte{0, 0, 0, 1, 0x41}},
		media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, Keyframe: true, Payload: []byte{1}},
		media.Packet{Kind: media.KindData, Payload: []byte("onMetaData")})
	for _, p := range append(first, rest...) {
		if err := m.WritePacket(&p); err != nil {
			t.Fatalf("mux: %v", err)
		}
	}
	if buf.Len() == 0 || buf.Len()%PacketSize != 0 {
		t.Fatalf("%d bytes muxed: want whole TS packets", buf.Len())
	}
	var out collected
	if err := Demux(&buf, &out, func() {}); !errors.Is(err, io.EOF) {
		t.Fatalf("demux again: %v", err)
	}
	count := func(ps collected) (cfg, video, audio int, firstVideo, lastVideo int64) {
		firstVideo = -1
		for _, p := range ps {
			switch {
			case p.SeqHeader:
				cfg++
			case p.Kind == media.KindVideo:
				if firstVideo < 0 {
					firstVideo = p.DTS
				}
				lastVideo = p.DTS
				video++
			case p.Kind == media.KindAudio:
				audio++
			}
		}
		return
	}
	ic, iv, ia, if0, il := count(in)
	oc, ov, oa, of0, ol := count(out)
	if oc < 2 || ov != iv || oa != ia || ol-of0 != il-if0 {
		t.Errorf("muxed and demuxed: %d configurations, %d video frames over %d ms, %d audio; had %d, %d over %d ms, %d",
			oc, ov, ol-of0, oa, ic, iv, il-if0, ia)
	}
}
