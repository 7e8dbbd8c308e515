package egress

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	avcC = []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xeb}
	asc  = []byte{0x11, 0x90}
)

// testFormat writes a packet as its kind and its payload.
var testFormat = stream.NewFormat("test", func(p *media.Packet) []byte { return append([]byte{byte(p.Kind)}, p.Payload...) })

func vcfg(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, SeqHeader: true, Payload: avcC}
}
func acfg(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, SeqHeader: true, Payload: asc}
}
func vframe(dts int64, key bool, size int) *media.Packet {
	return &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, Keyframe: key, Payload: make([]byte, size)}
}
func aframe(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, Payload: make([]byte, 300)}
}

func newPublished(t *testing.T, cfg stream.Config) (*stream.Stream, *stream.Publisher) {
	t.Helper()
	s := stream.New("live/test", cfg)
	p, err := s.Attach(stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

func write(t *testing.T, p *stream.Publisher, pkts ...*media.Packet) {
	t.Helper()
	for _, pkt := range pkts {
		if err := p.WritePacket(pkt); err != nil {
			t.Fatal(err)
		}
	}
}

// gop writes a keyframe at dts and n-1 inter frames 33 ms apart, with audio.
func gop(t *testing.T, p *stream.Publisher, dts int64, n int) int64 {
	t.Helper()
	for i := 0; i < n; i++ {
		write(t, p, vframe(dts, i == 0, 1000), aframe(dts))
		dts += 33
	}
	return dts
}
