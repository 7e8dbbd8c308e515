package flv

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/meshcast/meshcast/internal/media"
)

// checkParseErr fails unless err is one of the documented outcomes.
func checkParseErr(t *testing.T, p media.Packet, err error) {
	t.Helper()
	if !errors.Is(err, ErrSkip) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedCodec) {
		t.Fatalf("undocumented error %v", err)
	}
	if p.Kind != 0 || p.Payload != nil {
		t.Fatalf("packet %+v returned with error %v", p, err)
	}
}

// checkRoundTrip re-encodes p and checks that parsing gives p back, and that
// a body already in canonical form is reproduced byte for byte.
func checkRoundTrip(t *testing.T, body []byte, p media.Packet, canonical bool,
	parse func(uint32, []byte) (media.Packet, error)) {
	t.Helper()
	if len(p.Payload) > 0 && &p.Payload[0] != &body[len(body)-len(p.Payload)] {
		t.Fatal("payload does not alias the body")
	}
	out := AppendBody(nil, &p)
	if len(out) != BodySize(&p) {
		t.Fatalf("AppendBody wrote %d bytes, BodySize %d", len(out), BodySize(&p))
	}
	q, err := parse(uint32(p.DTS), out)
	if err != nil {
		t.Fatalf("reparse of %x: %v", out, err)
	}
	if !samePacket(p, q) {
		t.Fatalf("round trip %+v != %+v", q, p)
	}
	if canonical && !bytes.Equal(out, body) {
		t.Fatalf("canonical body %x re-encoded as %x", body, out)
	}
}

func FuzzParseVideo(f *testing.F) {
	for _, tt := range packetForms {
		if tt.want.Kind == media.KindVideo {
			f.Add(tt.body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseVideo(90_000, body)
		if err != nil {
			checkParseErr(t, p, err)
			return
		}
		if p.Kind != media.KindVideo || p.Codec != media.CodecH264 || p.DTS != 90_000 {
			t.Fatalf("packet %+v", p)
		}
		// Sequence headers are canonical as 0x17 with a zero CTS; frames
		// as 0x17 or 0x27 (frame types 3 and 4 become 2).
		canonical := body[0] == 0x27 && !p.SeqHeader || body[0] == 0x17 &&
			(!p.SeqHeader || body[2]|body[3]|body[4] == 0)
		checkRoundTrip(t, body, p, canonical, ParseVideo)
		if p.SeqHeader {
			// The sequence header parser must cope with anything that
			// got this far.
			if c, err := media.ParseAVCConfig(p.Payload); err == nil {
				_, _ = c.Info()
			}
		} else if _, err := media.AVCCToNALUs(p.Payload); err != nil && !errors.Is(err, media.ErrInvalidConfig) {
			t.Fatal(err)
		}
	})
}

func FuzzParseAudio(f *testing.F) {
	for _, tt := range packetForms {
		if tt.want.Kind == media.KindAudio {
			f.Add(tt.body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseAudio(1, body)
		if err != nil {
			checkParseErr(t, p, err)
			return
		}
		if p.Kind != media.KindAudio || p.Codec != media.CodecAAC || p.DTS != 1 {
			t.Fatalf("packet %+v", p)
		}
		// Only the sound rate/size/type flags may differ from the input.
		checkRoundTrip(t, body, p, body[0] == aacFlags, ParseAudio)
		if p.SeqHeader {
			_, _ = media.ParseAACConfig(p.Payload)
		}
	})
}

func FuzzReader(f *testing.F) {
	file := AppendHeader(nil, true, true)
	for _, tt := range packetForms {
		file = AppendTag(file, &tt.want)
	}
	f.Add(file)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		r.MaxBody = 1 << 20
		if _, _, err := r.ReadHeader(); err != nil {
			return
		}
		var pkts []media.Packet
		out := AppendHeader(nil, true, true)
		for range 1000 {
			p, err := r.ReadPacket()
			if err != nil {
				break
			}
			pkts = append(pkts, p)
			n := len(out)
			out = AppendTag(out, &p)
			if len(out)-n != TagSize(&p) {
				t.Fatalf("tag of %d bytes, TagSize %d", len(out)-n, TagSize(&p))
			}
		}
		// Every packet survives a trip through a tag.
		r = NewReader(bytes.NewReader(out))
		if _, _, err := r.ReadHeader(); err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			q, err := r.ReadPacket()
			if err != nil {
				t.Fatalf("re-read %+v: %v", p, err)
			}
			if !samePacket(p, q) {
				t.Fatalf("round trip %+v != %+v", q, p)
			}
		}
		if _, err := r.ReadPacket(); err != io.EOF {
			t.Fatalf("re-read past the end: %v", err)
		}
	})
}
