package rtsp

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/gortsplib/v5/pkg/rtptime"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/meshcast/meshcast/internal/media"
)

// rtpCapture keeps what a player sends.
type rtpCapture struct {
	pkts []capturedRTP
}

type capturedRTP struct {
	m   *description.Media
	pkt *rtp.Packet
}

func (c *rtpCapture) WritePacketRTPWithNTP(m *description.Media, pkt *rtp.Packet, _ time.Time) error {
	c.pkts = append(c.pkts, capturedRTP{m, pkt})
	return nil
}

// collect keeps what an ingest writes.
type collect struct{ got []*media.Packet }

func (c *collect) WritePacket(p *media.Packet) error {
	c.got = append(c.got, p)
	return nil
}

// TestRoundTrip: a stream's H.264 (with B-frames) and AAC, packetized as
// a viewer gets them and depacketized as a publisher's are, come back
// whole: the same frames, keyframes and payloads, the same presentation
// times (relative to the first), a valid decoding order.
func TestRoundTrip(t *testing.T) {
	src := makeClip(t, "h264b", "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k")
	var video *media.VideoConfig
	var audio *media.AACConfig
	for _, p := range src {
		if p.SeqHeader && p.Kind == media.KindVideo {
			video, _ = media.ParseVideoConfig(p.Codec, p.Payload)
		}
		if p.SeqHeader && p.Codec == media.CodecAAC {
			audio, _ = media.ParseAACConfig(p.Payload)
		}
	}
	tracks, err := newPlayTracks(video, audio)
	if err != nil {
		t.Fatal(err)
	}
	var capture rtpCapture
	p := newPlayer(context.Background(), nil, tracks, nil, slog.Default())
	defer p.cancel()
	p.out = &capture
	p.paced = true // no pacing: time goes as fast as the test
	p.paceT0 = time.Now().Add(-time.Hour)
	if err := p.init(); err != nil {
		t.Fatal(err)
	}
	for i := range src {
		if err := p.send(&src[i]); err != nil {
			t.Fatal(err)
		}
	}

	// The publisher's side reads the SDP the viewer got.
	desc := tracks.desc
	pl, err := planIngest(desc, "")
	if err != nil {
		t.Fatal(err)
	}
	var dec rtptime.GlobalDecoder
	dec.Initialize()
	var out collect
	in, err := newIngest(pl, &out, func(m *description.Media, pkt *rtp.Packet) (int64, bool) {
		return dec.Decode(m.Formats[0], pkt)
	}, "", slog.Default(), func(err error) { t.Fatal(err) })
	if err != nil {
		t.Fatal(err)
	}
	if err := in.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range capture.pkts {
		if c.m == in.video.medi {
			in.video.onRTP(c.pkt)
		} else {
			in.audio.onRTP(c.pkt)
		}
	}

	frames := func(pkts []*media.Packet, kind media.Kind) []*media.Packet {
		var out []*media.Packet
		for _, p := range pkts {
			if p.Kind == kind && !p.SeqHeader {
				out = append(out, p)
			}
		}
		return out
	}
	var srcPtrs []*media.Packet
	for i := range src {
		srcPtrs = append(srcPtrs, &src[i])
	}
	want, got := frames(srcPtrs, media.KindVideo), frames(out.got, media.KindVideo)
	if len(got) != len(want) {
		t.Fatalf("%d video frames came back of %d", len(got), len(want))
	}
	reordered := false
	for i := range want {
		w, g := want[i], got[i]
		wn, _ := media.AVCCToNALUs(w.Payload)
		gn, _ := media.AVCCToNALUs(g.Payload)
		wn = slices.DeleteFunc(wn, func(n []byte) bool { t := n[0] & 0x1f; return t == 7 || t == 8 || t == 9 })
		if !slices.EqualFunc(wn, gn, bytes.Equal) {
			t.Fatalf("video frame %d: NAL units differ", i)
		}
		if g.Keyframe != w.Keyframe {
			t.Fatalf("video frame %d: keyframe %v, want %v", i, g.Keyframe, w.Keyframe)
		}
		if d := (g.PTS() - got[0].PTS()) - (w.PTS() - want[0].PTS()); d < -1 || d > 1 {
			t.Fatalf("video frame %d: PTS off by %d ms", i, d)
		}
		// The DTS come from the pictures' order (the DTS extractor's
		// schedule, which may be a frame shorter than the encoder's): a
		// valid decoding order, with every PTS kept.
		if g.CTS < 0 || (i > 0 && g.DTS < got[i-1].DTS) {
			t.Fatalf("video frame %d: DTS %d CTS %d after DTS %d", i, g.DTS, g.CTS, got[i-1].DTS)
		}
		reordered = reordered || g.CTS > 0
	}
	if !reordered {
		t.Error("no frame shown after it is decoded: B-frames lost their order")
	}
	wa, ga := frames(srcPtrs, media.KindAudio), frames(out.got, media.KindAudio)
	if len(ga) != len(wa) {
		t.Fatalf("%d audio frames came back of %d", len(ga), len(wa))
	}
	for i := range wa {
		if !bytes.Equal(wa[i].Payload, ga[i].Payload) {
			t.Fatalf("audio frame %d differs", i)
		}
		if d := (ga[i].DTS - ga[0].DTS) - (wa[i].DTS - wa[0].DTS); d < -1 || d > 1 {
			t.Fatalf("audio frame %d: DTS off by %d ms", i, d)
		}
	}
}

// fuzzDesc is the description a fuzzed publisher announces: which by
// its first byte, H.264 and AAC, HEVC and AAC in LATM, or AV1 and AAC.
func fuzzDesc(which byte) *description.Session {
	asc := &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}
	var video format.Format
	var audio format.Format = &format.MPEG4Audio{PayloadTyp: 97, Config: asc, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	switch which % 3 {
	case 0:
		video = &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	case 1:
		video = &format.H265{PayloadTyp: 96}
		audio = &format.MPEG4AudioLATM{PayloadTyp: 97, StreamMuxConfig: &mpeg4audio.StreamMuxConfig{
			Programs: []*mpeg4audio.StreamMuxConfigProgram{{Layers: []*mpeg4audio.StreamMuxConfigLayer{{AudioSpecificConfig: asc, LatmBufferFullness: 255}}}},
		}}
	default:
		video = &format.AV1{PayloadTyp: 96}
	}
	return &description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{video}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{audio}},
	}}
}

// FuzzIngest feeds a publisher's RTP, as it arrives from outside, to the
// ingest: data is a codec choice byte, then packets, each a track byte, a
// 2-byte length and the RTP packet. Whatever comes out must be packets
// every output can read.
func FuzzIngest(f *testing.F) {
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		pl, err := planIngest(fuzzDesc(data[0]), "")
		if err != nil {
			t.Fatal(err)
		}
		var out collect
		in, err := newIngest(pl, &out, func(_ *description.Media, pkt *rtp.Packet) (int64, bool) {
			return int64(pkt.Timestamp), true
		}, "", slog.New(slog.DiscardHandler), func(error) {})
		if err != nil {
			t.Fatal(err)
		}
		if err := in.start(context.Background()); err != nil {
			t.Fatal(err)
		}
		for rest := data[1:]; len(rest) >= 3; {
			track, n := rest[0], int(binary.BigEndian.Uint16(rest[1:]))
			rest = rest[3:]
			if n > len(rest) {
				break
			}
			var pkt rtp.Packet
			if pkt.Unmarshal(rest[:n]) == nil {
				if track%2 == 0 {
					in.video.onRTP(&pkt)
				} else {
					in.audio.onRTP(&pkt)
				}
			}
			rest = rest[n:]
		}
		last := map[media.Kind]int64{}
		for _, p := range out.got {
			if p.DTS < 0 || p.CTS < 0 || p.DTS < last[p.Kind] {
				t.Fatalf("%s packet at DTS %d CTS %d after %d", p.Kind, p.DTS, p.CTS, last[p.Kind])
			}
			last[p.Kind] = p.DTS
			switch {
			case p.SeqHeader && p.Kind == media.KindVideo:
				if _, err := media.ParseVideoConfig(p.Codec, p.Payload); err != nil {
					t.Fatalf("video configuration: %v", err)
				}
			case p.SeqHeader:
				if _, err := media.ParseAACConfig(p.Payload); err != nil {
					t.Fatalf("audio configuration: %v", err)
				}
			case p.Kind == media.KindVideo:
				if _, err := media.SplitFrame(p.Codec, p.Payload); err != nil {
					t.Fatalf("video frame: %v", err)
				}
			}
		}
	})
}

// TestIngestSeeds: the fuzz corpus's captures of real RTP (ffmpeg's HEVC
// and LATM AAC, a viewer's H.264 and AAC, a viewer's AV1) come out as
// configurations, keyframes and frames of every track they carry.
func TestIngestSeeds(t *testing.T) {
	for _, c := range []struct {
		seed  string
		codec media.Codec
		audio bool
	}{
		{"h264-aac", media.CodecH264, true},
		{"hevc-latm", media.CodecH265, true},
		{"av1", media.CodecAV1, false},
	} {
		t.Run(c.seed, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzIngest", c.seed))
			if err != nil {
				t.Fatal(err)
			}
			_, arg, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
			data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(arg, "[]byte("), ")"))
			if err != nil {
				t.Fatal(err)
			}
			var out collect
			pl, _ := planIngest(fuzzDesc(data[0]), "")
			in, err := newIngest(pl, &out, func(_ *description.Media, pkt *rtp.Packet) (int64, bool) {
				return int64(pkt.Timestamp), true
			}, "", slog.New(slog.DiscardHandler), func(err error) { t.Fatal(err) })
			if err != nil {
				t.Fatal(err)
			}
			in.start(context.Background())
			for rest := []byte(data[1:]); len(rest) >= 3; {
				track, n := rest[0], int(binary.BigEndian.Uint16(rest[1:]))
				var pkt rtp.Packet
				if err := pkt.Unmarshal(rest[3 : 3+n]); err != nil {
					t.Fatal(err)
				}
				if track == 0 {
					in.video.onRTP(&pkt)
				} else {
					in.audio.onRTP(&pkt)
				}
				rest = rest[3+n:]
			}
			var cfg, key bool
			audio := 0
			for _, p := range out.got {
				switch {
				case p.SeqHeader && p.Kind == media.KindVideo:
					cfg = p.Codec == c.codec
				case p.Kind == media.KindVideo:
					key = key || p.Keyframe
				case p.Kind == media.KindAudio && !p.SeqHeader:
					audio++
				}
			}
			if !cfg || !key || (c.audio && audio == 0) {
				t.Errorf("%s configuration %v, keyframe %v, %d audio frames", c.codec, cfg, key, audio)
			}
		})
	}
}
