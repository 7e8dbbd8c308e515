package flv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/meshcast/meshcast/internal/media"
)

func TestReaderRoundTrip(t *testing.T) {
	// A large frame exercises the growing body buffer.
	bigAU := make([]byte, 4+300_000)
	binary.BigEndian.PutUint32(bigAU, 300_000)
	for i := range bigAU[4:] {
		bigAU[4+i] = byte(i)
	}
	pkts := []media.Packet{}
	for _, f := range packetForms {
		p := f.want
		p.DTS = int64(f.ts)
		pkts = append(pkts, p)
	}
	pkts = append(pkts, media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 1 << 31, CTS: -5, Payload: bigAU})

	file := AppendHeader(nil, true, true)
	for i := range pkts {
		file = AppendTag(file, &pkts[i])
	}
	// A reserved tag type, an empty tag and a video command frame are all
	// skipped by ReadPacket.
	file = append(file, 7, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0, 0, 0, 12)
	file = append(file, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11)
	file = append(file, 9, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x57, 0, 0, 0, 0, 13)

	for name, src := range map[string]io.Reader{
		"whole":    bytes.NewReader(file),
		"one byte": iotest.OneByteReader(bytes.NewReader(file)),
	} {
		t.Run(name, func(t *testing.T) {
			r := NewReader(src)
			v, a, err := r.ReadHeader()
			if err != nil || !v || !a {
				t.Fatalf("ReadHeader = %v, %v, %v", v, a, err)
			}
			var prev []byte
			for i, want := range pkts {
				got, err := r.ReadPacket()
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				if !samePacket(got, want) {
					t.Fatalf("packet %d = %+v\nwant %+v", i, got, want)
				}
				if prev != nil && len(got.Payload) > 0 && &prev[0] == &got.Payload[0] {
					t.Fatal("payload buffer reused between packets")
				}
				prev = got.Payload
			}
			if p, err := r.ReadPacket(); err != io.EOF {
				t.Fatalf("after last packet: %+v, %v; want io.EOF", p, err)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	hdr := AppendHeader(nil, true, false)
	tag := AppendTag(nil, &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, Payload: []byte{1, 2, 3}})

	headerErrs := map[string]struct {
		in  []byte
		err error
	}{
		"empty":          {nil, io.EOF},
		"short":          {hdr[:5], io.ErrUnexpectedEOF},
		"no prev size":   {hdr[:9], io.ErrUnexpectedEOF},
		"bad signature":  {cat([]byte("FLX"), hdr[3:]), ErrMalformed},
		"version 2":      {cat([]byte("FLV\x02"), hdr[4:]), ErrMalformed},
		"offset 8":       {cat(hdr[:5], []byte{0, 0, 0, 8}, hdr[9:]), ErrMalformed},
		"offset huge":    {cat(hdr[:5], []byte{0xff, 0, 0, 8}, hdr[9:]), ErrMalformed},
		"offset too far": {cat(hdr[:5], []byte{0, 0, 0, 12}, hdr[9:]), io.ErrUnexpectedEOF},
	}
	for name, tt := range headerErrs {
		if _, _, err := NewReader(bytes.NewReader(tt.in)).ReadHeader(); !errors.Is(err, tt.err) {
			t.Errorf("ReadHeader(%s) error = %v, want %v", name, err, tt.err)
		}
	}

	// A longer header (DataOffset 12) is skipped.
	long := cat(hdr[:5], []byte{0, 0, 0, 12, 1, 2, 3}, hdr[9:], tag)
	r := NewReader(bytes.NewReader(long))
	if _, _, err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if typ, _, body, err := r.ReadTag(); err != nil || typ != TagAudio || !bytes.Equal(body, tag[11:len(tag)-4]) {
		t.Fatalf("ReadTag after long header = %d, %x, %v", typ, body, err)
	}

	tagErrs := map[string]struct {
		in  []byte
		max int
		err error
	}{
		"truncated header": {tag[:5], 0, io.ErrUnexpectedEOF},
		"truncated body":   {tag[:13], 0, io.ErrUnexpectedEOF},
		"no body":          {tag[:11], 0, io.ErrUnexpectedEOF},
		"too large":        {tag, 4, ErrTooLarge},
		"encrypted":        {cat([]byte{0x28}, tag[1:]), 0, ErrEncrypted},
		"mp3":              {cat([]byte{8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x2f}, []byte{0, 0, 0, 12}), 0, ErrUnsupportedCodec},
		"huge declared":    {[]byte{9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x17, 1}, 0, io.ErrUnexpectedEOF},
	}
	for name, tt := range tagErrs {
		r := NewReader(bytes.NewReader(tt.in))
		r.MaxBody = tt.max
		if p, err := r.ReadPacket(); !errors.Is(err, tt.err) {
			t.Errorf("ReadPacket(%s) = %+v, %v; want %v", name, p, err, tt.err)
		}
	}

	// A missing final PreviousTagSize still yields the tag.
	r = NewReader(bytes.NewReader(tag[:len(tag)-2]))
	if p, err := r.ReadPacket(); err != nil || !bytes.Equal(p.Payload, []byte{1, 2, 3}) {
		t.Fatalf("ReadPacket without trailer = %+v, %v", p, err)
	}
	if _, err := r.ReadPacket(); err != io.EOF {
		t.Fatalf("then %v, want io.EOF", err)
	}
}

func TestReaderFFmpeg(t *testing.T) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not installed; skipping the real-encoder FLV test")
	}
	out := filepath.Join(t.TempDir(), "out.flv")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-f", "lavfi", "-i", "sine",
		"-t", "2", "-c:v", "libx264", "-g", "30", "-c:a", "aac", "-f", "flv", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	r := NewReader(f)
	hasVideo, hasAudio, err := r.ReadHeader()
	if err != nil || !hasVideo || !hasAudio {
		t.Fatalf("ReadHeader = %v, %v, %v", hasVideo, hasAudio, err)
	}
	var (
		videoInfo             *media.VideoInfo
		aac                   *media.AACConfig
		frames, keys, audio   int
		lastDTS               int64 = -1
		sawMetadata, firstKey bool
	)
	for {
		p, err := r.ReadPacket()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case p.Kind == media.KindData:
			sawMetadata = bytes.Contains(p.Payload, []byte("onMetaData"))
		case p.Kind == media.KindVideo && p.SeqHeader:
			c, err := media.ParseAVCConfig(p.Payload)
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info()
			if err != nil {
				t.Fatal(err)
			}
			videoInfo = &info
		case p.Kind == media.KindVideo:
			if videoInfo == nil {
				t.Fatal("video frame before sequence header")
			}
			if frames == 0 {
				firstKey = p.Keyframe
			}
			frames++
			if p.Keyframe {
				keys++
			}
			if p.DTS < lastDTS {
				t.Errorf("video DTS went back from %d to %d", lastDTS, p.DTS)
			}
			lastDTS = p.DTS
			if p.PTS() < p.DTS {
				t.Errorf("PTS %d before DTS %d", p.PTS(), p.DTS)
			}
			if _, err := media.AVCCToNALUs(p.Payload); err != nil {
				t.Errorf("frame %d: %v", frames, err)
			}
		case p.Kind == media.KindAudio && p.SeqHeader:
			if aac, err = media.ParseAACConfig(p.Payload); err != nil {
				t.Fatal(err)
			}
		case p.Kind == media.KindAudio:
			audio++
		}
	}
	if !sawMetadata {
		t.Error("no onMetaData")
	}
	if videoInfo == nil || videoInfo.Width != 320 || videoInfo.Height != 240 {
		t.Errorf("video info %+v, want 320x240", videoInfo)
	}
	if aac == nil || (aac.SampleRate != 48000 && aac.SampleRate != 44100) || aac.Profile() != "LC" {
		t.Errorf("AAC config %+v", aac)
	}
	if frames < 55 || frames > 65 || keys < 2 || !firstKey {
		t.Errorf("%d video frames, %d keyframes, first key %v; want ~60, >=2, true", frames, keys, firstKey)
	}
	if audio < 80 {
		t.Errorf("%d audio frames, want ~90", audio)
	}
	t.Logf("%dx%d %s %s %.0f fps; %d frames (%d key); AAC %s %d Hz %d ch, %d frames",
		videoInfo.Width, videoInfo.Height, videoInfo.Profile, videoInfo.Level, videoInfo.FPS,
		frames, keys, aac.Profile(), aac.SampleRate, aac.Channels, audio)
}
