package flv

import (
	"bytes"
	"encoding/binary"
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
		if p.Kind != media.KindVideo || p.DTS != 90_000 {
			t.Fatalf("packet %+v", p)
		}
		switch p.Codec {
		case media.CodecH264:
			// Sequence headers are canonical as 0x17 with a zero CTS;
			// frames as 0x17 or 0x27 (frame types 3 and 4 become 2).
			canonical := body[0] == 0x27 && !p.SeqHeader || body[0] == 0x17 &&
				(!p.SeqHeader || body[2]|body[3]|body[4] == 0)
			checkRoundTrip(t, body, p, canonical, ParseVideo)
			if p.SeqHeader {
				// The sequence header parser must cope with anything
				// that got this far.
				if c, err := media.ParseAVCConfig(p.Payload); err == nil {
					_, _ = c.Info()
				}
			} else if _, err := media.AVCCToNALUs(p.Payload); err != nil && !errors.Is(err, media.ErrInvalidConfig) {
				t.Fatal(err)
			}
		case media.CodecH265:
			checkRoundTrip(t, body, p, false, ParseVideo)
			if p.SeqHeader {
				if c, err := media.ParseHEVCConfig(p.Payload); err == nil {
					_, _ = c.Info()
				}
			} else if _, err := media.AVCCToNALUs(p.Payload); err != nil && !errors.Is(err, media.ErrInvalidConfig) {
				t.Fatal(err)
			}
		case media.CodecAV1:
			checkRoundTrip(t, body, p, false, ParseVideo)
			if p.SeqHeader {
				if c, err := media.ParseAV1Config(p.Payload); err == nil {
					_, _ = c.Info()
				}
			} else if _, err := media.SplitOBUs(p.Payload); err != nil && !errors.Is(err, media.ErrInvalidConfig) {
				t.Fatal(err)
			}
		default:
			t.Fatalf("packet %+v", p)
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

// refTag is one tag as refTags finds it.
type refTag struct {
	tagType uint8
	ts      uint32
	body    []byte
}

// refTags splits an FLV stream into tags straight from the format's
// description, as a reference for Reader: the tags, and the kind of error
// that ends the stream (nil for a clean end).
func refTags(data []byte, maxBody int) ([]refTag, error) {
	switch {
	case len(data) == 0:
		return nil, io.EOF
	case len(data) < 9:
		return nil, io.ErrUnexpectedEOF
	case string(data[:3]) != "FLV" || data[3] != 1:
		return nil, ErrMalformed
	}
	offset := uint64(binary.BigEndian.Uint32(data[5:]))
	if offset < 9 || offset-9 > maxHeaderExtra {
		return nil, ErrMalformed
	}
	if uint64(len(data)) < offset+4 {
		return nil, io.ErrUnexpectedEOF
	}
	var tags []refTag
	for pos := int(offset) + 4; pos < len(data); {
		if len(data)-pos < TagHeaderSize {
			return tags, io.ErrUnexpectedEOF
		}
		h := data[pos : pos+TagHeaderSize]
		if h[0]&0x20 != 0 {
			return tags, ErrEncrypted
		}
		size := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
		if size > maxBody {
			return tags, ErrTooLarge
		}
		pos += TagHeaderSize
		if len(data)-pos < size {
			return tags, io.ErrUnexpectedEOF
		}
		tags = append(tags, refTag{h[0] & 0x1f, uint32(h[7])<<24 | uint32(h[4])<<16 | uint32(h[5])<<8 | uint32(h[6]), data[pos : pos+size]})
		// A PreviousTagSize cut short by the end of the stream is allowed.
		pos = min(pos+size+PrevTagSizeLen, len(data))
	}
	return tags, nil
}

// FuzzReadTag checks the Reader's header and tag parsing against refTags:
// the same tags, bodies within MaxBody, and the same way of ending.
func FuzzReadTag(f *testing.F) {
	file := AppendHeader(nil, true, true)
	for _, tt := range packetForms {
		file = AppendTag(file, &tt.want)
	}
	f.Add(file)
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxBody = 1 << 16
		want, wantErr := refTags(data, maxBody)
		r := NewReader(bytes.NewReader(data))
		r.MaxBody = maxBody
		var err error
		if _, _, err = r.ReadHeader(); err == nil {
			for i := 0; ; i++ {
				var tagType uint8
				var ts uint32
				var body []byte
				tagType, ts, body, err = r.ReadTag()
				if err != nil {
					break
				}
				if i >= len(want) {
					t.Fatalf("tag %d read, reference has %d", i, len(want))
				}
				if w := want[i]; tagType != w.tagType || ts != w.ts || !bytes.Equal(body, w.body) {
					t.Fatalf("tag %d: type %d ts %d %d bytes, want type %d ts %d %d bytes", i, tagType, ts, len(body), w.tagType, w.ts, len(w.body))
				}
				want[i].body = nil // mark as read
			}
		}
		for i, w := range want {
			if w.body != nil {
				t.Fatalf("tag %d of %d not read: %v", i, len(want), err)
			}
		}
		switch {
		case wantErr == nil:
			if err != io.EOF {
				t.Fatalf("clean end reported as %v", err)
			}
		case wantErr == io.ErrUnexpectedEOF:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("truncated stream reported as %v", err)
			}
		case !errors.Is(err, wantErr):
			t.Fatalf("error %v, want %v", err, wantErr)
		}
	})
}
