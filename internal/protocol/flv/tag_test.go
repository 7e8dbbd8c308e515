package flv

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/internal/media"
)

// Real x264 avcC (1280x720 High 3.1) and an AAC-LC 44.1 kHz stereo config.
var (
	testAVCC = []byte{
		0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a,
		0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
		0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
		0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
		0xfd, 0xf8, 0xf8, 0x00,
	}
	testASC = []byte{0x12, 0x10}
	// AUD + IDR slice, 4-byte length-prefixed.
	testAU = []byte{0, 0, 0, 2, 0x09, 0x10, 0, 0, 0, 5, 0x65, 0x88, 0x84, 0x00, 0x33}
	// The head of an hvcC; FLV does not look inside it.
	testHVCC = []byte{0x01, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x3c, 0xf0, 0, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 0}
	// SVT-AV1's av1C for 320x240, and a temporal unit: a temporal
	// delimiter and a frame OBU, each with its size.
	testAV1C = []byte{0x81, 0x00, 0x0c, 0x00, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0x02, 0xf8, 0x00, 0x40}
	testTU   = []byte{0x12, 0x00, 0x32, 0x02, 0xaa, 0xbb}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func samePacket(a, b media.Packet) bool {
	return a.Kind == b.Kind && a.Codec == b.Codec && a.DTS == b.DTS && a.CTS == b.CTS &&
		a.Keyframe == b.Keyframe && a.SeqHeader == b.SeqHeader && bytes.Equal(a.Payload, b.Payload)
}

// packetForms lists every packet form with its canonical tag body.
var packetForms = []struct {
	name string
	ts   uint32
	body []byte
	want media.Packet
}{
	{"AVC sequence header", 0, cat([]byte{0x17, 0, 0, 0, 0}, testAVCC),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: testAVCC}},
	{"AVC keyframe", 40, cat([]byte{0x17, 1, 0, 0, 0x50}, testAU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 40, CTS: 80, Keyframe: true, Payload: testAU}},
	{"AVC inter frame, negative CTS", 0x12345678, cat([]byte{0x27, 1, 0xff, 0xff, 0xdf}, testAU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 0x12345678, CTS: -33, Payload: testAU}},
	{"AVC max CTS", 7, cat([]byte{0x27, 1, 0x7f, 0xff, 0xff}, testAU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 7, CTS: maxCTS, Payload: testAU}},
	{"AVC min CTS", 7, cat([]byte{0x27, 1, 0x80, 0, 0}, testAU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 7, CTS: minCTS, Payload: testAU}},
	{"HEVC sequence header", 0, cat([]byte{0x90, 'h', 'v', 'c', '1'}, testHVCC),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH265, SeqHeader: true, Payload: testHVCC}},
	{"HEVC keyframe", 40, cat([]byte{0x91, 'h', 'v', 'c', '1', 0, 0, 0x50}, testAU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH265, DTS: 40, CTS: 80, Keyframe: true, Payload: testAU}},
	{"HEVC inter frame, negative CTS", 9, cat([]byte{0xa1, 'h', 'v', 'c', '1', 0xff, 0xff, 0xdf}, testAU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecH265, DTS: 9, CTS: -33, Payload: testAU}},
	{"AV1 sequence header", 0, cat([]byte{0x90, 'a', 'v', '0', '1'}, testAV1C),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, SeqHeader: true, Payload: testAV1C}},
	{"AV1 keyframe", 33, cat([]byte{0x91, 'a', 'v', '0', '1'}, testTU),
		media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, DTS: 33, Keyframe: true, Payload: testTU}},
	{"AAC sequence header", 0, cat([]byte{0xaf, 0}, testASC),
		media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: testASC}},
	{"AAC frame", 23, []byte{0xaf, 1, 0x21, 0x10, 0x04},
		media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: 23, Payload: []byte{0x21, 0x10, 0x04}}},
	{"script data", 0, []byte{0x02, 0x00, 0x0a, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a', 't', 'a', 0x05},
		media.Packet{Kind: media.KindData, Codec: media.CodecAMF0,
			Payload: []byte{0x02, 0x00, 0x0a, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a', 't', 'a', 0x05}}},
}

func parse(tagType uint8, ts uint32, body []byte) (media.Packet, error) {
	switch tagType {
	case TagVideo:
		return ParseVideo(ts, body)
	case TagAudio:
		return ParseAudio(ts, body)
	}
	return ParseData(ts, body)
}

func TestParseAndAppendForms(t *testing.T) {
	for _, tt := range packetForms {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(TagType(&tt.want), tt.ts, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if !samePacket(got, tt.want) {
				t.Fatalf("parsed %+v\nwant   %+v", got, tt.want)
			}
			if len(got.Payload) > 0 && &got.Payload[0] != &tt.body[len(tt.body)-len(got.Payload)] {
				t.Error("payload does not alias the body")
			}
			if n := BodySize(&tt.want); n != len(tt.body) {
				t.Errorf("BodySize = %d, want %d", n, len(tt.body))
			}
			if b := AppendBody([]byte{0xee}, &tt.want); !bytes.Equal(b[1:], tt.body) || b[0] != 0xee {
				t.Errorf("AppendBody = %x\nwant        %x", b[1:], tt.body)
			}
		})
	}
}

func TestAppendBodyNormalises(t *testing.T) {
	// Sequence headers never carry a CTS or an inter frame type, and
	// out-of-range CTS values are clamped.
	seq := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, CTS: 99, Payload: testAVCC}
	if b := AppendBody(nil, &seq); !bytes.Equal(b[:5], []byte{0x17, 0, 0, 0, 0}) {
		t.Errorf("seq header prefix %x", b[:5])
	}
	big := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, CTS: 1 << 30, Payload: testAU}
	if b := AppendBody(nil, &big); !bytes.Equal(b[:5], []byte{0x27, 1, 0x7f, 0xff, 0xff}) {
		t.Errorf("clamped CTS prefix %x", b[:5])
	}
	small := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, CTS: -1 << 30, Payload: testAU}
	if b := AppendBody(nil, &small); !bytes.Equal(b[:5], []byte{0x27, 1, 0x80, 0, 0}) {
		t.Errorf("clamped CTS prefix %x", b[:5])
	}
	none := media.Packet{Payload: []byte{1, 2, 3}}
	if b := AppendBody(nil, &none); len(b) != 0 || BodySize(&none) != 0 || TagType(&none) != 0 || TagSize(&none) != 0 {
		t.Errorf("packet without kind produced %x", b)
	}
	if b := AppendTag([]byte{9}, &none); !bytes.Equal(b, []byte{9}) {
		t.Errorf("AppendTag for packet without kind = %x", b)
	}
}

func TestParseVideoErrors(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		err  error
		msg  string
	}{
		{"empty", nil, ErrMalformed, ""},
		{"command frame", []byte{0x57, 0}, ErrSkip, ""},
		{"command frame, other codec", []byte{0x52, 0}, ErrSkip, ""},
		{"end of sequence", []byte{0x17, 2, 0, 0, 0}, ErrSkip, ""},
		{"empty frame", []byte{0x27, 1, 0, 0, 0}, ErrSkip, ""},
		{"short AVC", []byte{0x17, 1, 0, 0}, ErrMalformed, ""},
		{"frame type 0", cat([]byte{0x07, 1, 0, 0, 0}, testAU), ErrMalformed, ""},
		{"frame type 6", cat([]byte{0x67, 1, 0, 0, 0}, testAU), ErrMalformed, ""},
		{"AVC packet type 3", cat([]byte{0x17, 3, 0, 0, 0}, testAU), ErrMalformed, ""},
		{"empty seq header", []byte{0x17, 0, 0, 0, 0}, ErrMalformed, ""},
		{"bad NALU length", []byte{0x17, 1, 0, 0, 0, 0, 0, 0, 9, 0x65}, ErrMalformed, ""},
		{"trailing bytes", cat([]byte{0x17, 1, 0, 0, 0}, testAU, []byte{0}), ErrMalformed, ""},
		{"Sorenson", []byte{0x22, 0, 0}, ErrUnsupportedCodec, "flv: video codec 2 (Sorenson H.263) not supported"},
		{"VP6", []byte{0x14}, ErrUnsupportedCodec, "flv: video codec 4 (On2 VP6) not supported"},
		{"legacy HEVC", []byte{0x1c, 0, 0, 0, 0, 1}, ErrUnsupportedCodec, "flv: video codec 12 (HEVC, non-standard) not supported"},
		{"enhanced VP9", []byte{0x90, 'v', 'p', '0', '9', 1}, ErrUnsupportedCodec, `flv: video codec "vp09" (VP9, enhanced RTMP) not supported`},
		{"enhanced empty AV1 frame", []byte{0xa3, 'a', 'v', '0', '1'}, ErrSkip, ""},
		{"enhanced empty HEVC seq start", []byte{0x90, 'h', 'v', 'c', '1'}, ErrMalformed, ""},
		{"enhanced HEVC without CTS", []byte{0x91, 'h', 'v', 'c', '1', 0, 0}, ErrMalformed, ""},
		{"enhanced HEVC bad NALU length", []byte{0x93, 'h', 'v', 'c', '1', 0, 0, 0, 9, 0x26}, ErrMalformed, ""},
		{"enhanced AV1 without OBU size", []byte{0x93, 'a', 'v', '0', '1', 0x30, 0x00}, ErrMalformed, ""},
		{"enhanced packet type 9", []byte{0x99, 'h', 'v', 'c', '1', 0}, ErrMalformed, ""},
		{"enhanced frame type 0", []byte{0x83, 'h', 'v', 'c', '1', 0, 0, 0, 1, 0x26}, ErrMalformed, ""},
		{"enhanced sequence end", []byte{0x92, 'h', 'v', 'c', '1'}, ErrSkip, ""},
		{"enhanced metadata", []byte{0x94, 'h', 'v', 'c', '1', 2, 0, 0}, ErrSkip, ""},
		{"enhanced multitrack", []byte{0x96, 0x00, 'h', 'v', 'c', '1'}, ErrUnsupportedCodec, "flv: video codec (enhanced RTMP) not supported"},
		{"enhanced binary FourCC", []byte{0x90, 0, 1, 2, 3}, ErrUnsupportedCodec, `flv: video codec "0x00010203" (enhanced RTMP) not supported`},
		{"enhanced short", []byte{0x90}, ErrMalformed, ""},
		{"enhanced command", []byte{0xd0, 'h', 'v', 'c', '1', 0}, ErrSkip, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseVideo(0, tt.body)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseVideo = %+v, %v; want %v", p, err, tt.err)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("message %q, want %q", err, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "flv: ") {
				t.Errorf("message %q lacks context", err)
			}
			var ce *UnsupportedCodecError
			if errors.As(err, &ce) && ce.Kind != media.KindVideo {
				t.Errorf("codec error kind %v", ce.Kind)
			}
		})
	}
}

func TestParseAudioErrors(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		err  error
		msg  string
	}{
		{"empty", nil, ErrMalformed, ""},
		{"no packet type", []byte{0xaf}, ErrMalformed, ""},
		{"bad packet type", []byte{0xaf, 2, 1}, ErrMalformed, ""},
		{"empty seq header", []byte{0xaf, 0}, ErrMalformed, ""},
		{"empty frame", []byte{0xaf, 1}, ErrSkip, ""},
		{"MP3", []byte{0x2f, 0xff, 0xfb}, ErrUnsupportedCodec, "flv: audio codec 2 (MP3) not supported"},
		{"Speex", []byte{0xb2, 0}, ErrUnsupportedCodec, "flv: audio codec 11 (Speex) not supported"},
		{"G.711 A-law", []byte{0x72, 0}, ErrUnsupportedCodec, "flv: audio codec 7 (G.711 A-law) not supported"},
		{"Nellymoser", []byte{0x6e, 0}, ErrUnsupportedCodec, "flv: audio codec 6 (Nellymoser) not supported"},
		{"reserved 13", []byte{0xd0, 0}, ErrUnsupportedCodec, "flv: audio codec 13 (unknown) not supported"},
		{"enhanced Opus", []byte{0x90, 'O', 'p', 'u', 's', 0}, ErrUnsupportedCodec, `flv: audio codec "Opus" (Opus, enhanced RTMP) not supported`},
		{"enhanced multitrack", []byte{0x95, 0, 'O', 'p', 'u', 's'}, ErrUnsupportedCodec, "flv: audio codec (enhanced RTMP) not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseAudio(0, tt.body)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseAudio = %+v, %v; want %v", p, err, tt.err)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("message %q, want %q", err, tt.msg)
			}
		})
	}
}

func TestParseAudioIgnoresFlags(t *testing.T) {
	// Encoders sometimes write other rate/size/type bits for AAC; the
	// AudioSpecificConfig is authoritative (§E.4.2.1).
	p, err := ParseAudio(5, []byte{0xa2, 1, 0x21})
	if err != nil || p.Codec != media.CodecAAC || p.SeqHeader || !bytes.Equal(p.Payload, []byte{0x21}) {
		t.Fatalf("ParseAudio = %+v, %v", p, err)
	}
}

func TestParseDataErrors(t *testing.T) {
	if _, err := ParseData(0, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ParseData(nil) error = %v", err)
	}
}

func TestAppendTag(t *testing.T) {
	p := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 0x8765_4321, CTS: 2, Keyframe: true, Payload: testAU}
	want := cat(
		[]byte{9, 0, 0, byte(5 + len(testAU)), 0x65, 0x43, 0x21, 0x87, 0, 0, 0},
		[]byte{0x17, 1, 0, 0, 2}, testAU,
		[]byte{0, 0, 0, byte(11 + 5 + len(testAU))},
	)
	got := AppendTag(nil, &p)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendTag = %x\nwant       %x", got, want)
	}
	if TagSize(&p) != len(want) {
		t.Errorf("TagSize = %d, want %d", TagSize(&p), len(want))
	}
	for _, f := range packetForms {
		if n := len(AppendTag(nil, &f.want)); n != TagSize(&f.want) {
			t.Errorf("%s: AppendTag wrote %d bytes, TagSize %d", f.name, n, TagSize(&f.want))
		}
	}
	for tt, want := range map[media.Kind]uint8{media.KindVideo: 9, media.KindAudio: 8, media.KindData: 18} {
		if got := TagType(&media.Packet{Kind: tt}); got != want {
			t.Errorf("TagType(%v) = %d, want %d", tt, got, want)
		}
	}

	huge := media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, Payload: make([]byte, MaxBodySize+1)}
	if TagSize(&huge) != 0 || len(AppendTag(nil, &huge)) != 0 {
		t.Error("oversized packet was written")
	}
}

func TestAppendTagNoAlloc(t *testing.T) {
	p := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Payload: make([]byte, 8192)}
	buf := make([]byte, 0, TagSize(&p))
	if n := testing.AllocsPerRun(100, func() { buf = AppendTag(buf[:0], &p) }); n != 0 {
		t.Errorf("AppendTag allocates %.0f times", n)
	}
}

func TestAppendHeader(t *testing.T) {
	for _, tt := range []struct {
		v, a  bool
		flags byte
	}{{true, true, 5}, {true, false, 1}, {false, true, 4}, {false, false, 0}} {
		want := []byte{'F', 'L', 'V', 1, tt.flags, 0, 0, 0, 9, 0, 0, 0, 0}
		got := AppendHeader(nil, tt.v, tt.a)
		if !bytes.Equal(got, want) || len(got) != HeaderSize {
			t.Errorf("AppendHeader(%v, %v) = %x", tt.v, tt.a, got)
		}
		v, a, err := NewReader(bytes.NewReader(got)).ReadHeader()
		if err != nil || v != tt.v || a != tt.a {
			t.Errorf("ReadHeader = %v, %v, %v", v, a, err)
		}
	}
}

func BenchmarkAppendTag(b *testing.B) {
	p := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 1234, CTS: 66, Payload: make([]byte, 8<<10)}
	buf := make([]byte, 0, TagSize(&p))
	b.ReportAllocs()
	b.SetBytes(int64(TagSize(&p)))
	for b.Loop() {
		buf = AppendTag(buf[:0], &p)
	}
}

func BenchmarkParseVideo(b *testing.B) {
	au := make([]byte, 0, 8<<10)
	for len(au) < 8<<10-1004 {
		au = append(au, 0, 0, 3, 0xe8)
		au = append(au, make([]byte, 1000)...)
	}
	body := cat([]byte{0x27, 1, 0, 0, 0x42}, au)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseVideo(1000, body); err != nil {
			b.Fatal(err)
		}
	}
}
