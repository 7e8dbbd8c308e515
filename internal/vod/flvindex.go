package vod

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/meshcast/meshcast/internal/media"
)

// FLV tag types and codec identifiers the index reads.
const (
	flvTagAudio = 8
	flvTagVideo = 9
	flvTagData  = 18
	flvCodecAVC = 7
	flvCodecAAC = 10
)

// indexFLV builds the index of an FLV file (a recording) by walking its
// tags: the H.264 or HEVC and AAC frames, with the first sequence header of
// each.
// A file cut short, by a crash while recording, ends at its last complete
// tag; a damaged tag ends it too, once some media came before.
func indexFLV(r io.ReaderAt, size int64) (*Index, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10)
	var h [13]byte // file header and PreviousTagSize0
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, fmt.Errorf("%w: flv: file header: %v", ErrUnsupported, err)
	}
	if h[0] != 'F' || h[1] != 'L' || h[2] != 'V' || h[3] != 1 {
		return nil, fmt.Errorf("%w: flv: not an FLV file", ErrUnsupported)
	}
	pos := int64(binary.BigEndian.Uint32(h[5:]))
	if pos < 9 || pos > 1<<16 {
		return nil, fmt.Errorf("%w: flv: header size %d", ErrUnsupported, pos)
	}
	if _, err := br.Discard(int(pos - 9)); err != nil {
		return nil, fmt.Errorf("%w: flv: file header: %v", ErrUnsupported, err)
	}
	pos += 4
	x := &Index{}
	var video, audio Track
	var base uint32
	var high int64 // timestamp wraps seen, in units of 2^32 ms
	var last uint32
	started := false
	for {
		var th [11]byte
		if _, err := io.ReadFull(br, th[:]); err != nil {
			break // the end, or a tag cut short
		}
		typ := th[0] & 0x1f
		n := int64(th[1])<<16 | int64(th[2])<<8 | int64(th[3])
		ts := uint32(th[4])<<16 | uint32(th[5])<<8 | uint32(th[6]) | uint32(th[7])<<24
		body := pos + 11
		if body+n+4 > size {
			break // cut short: the tag, or its PreviousTagSize, is incomplete
		}
		if th[0]&0x20 != 0 {
			return nil, fmt.Errorf("%w: flv: encrypted tags", ErrUnsupported)
		}
		if !started {
			base, last, started = ts, ts, true
		}
		if ts < last && last-ts > 1<<31 {
			high++ // 32-bit millisecond clock wrapped
		}
		last = ts
		dts := rescale(high<<32+int64(ts)-int64(base), 1000)
		var err error
		switch typ {
		case flvTagVideo:
			err = flvVideo(br, &video, body, n, dts)
		case flvTagAudio:
			err = flvAudio(br, &audio, body, n, dts)
		default:
			_, err = br.Discard(int(n))
		}
		if err == nil {
			_, err = br.Discard(4) // PreviousTagSize
		}
		if err != nil {
			if errors.Is(err, errFLVDamaged) && len(video.Samples)+len(audio.Samples) > 0 {
				break
			}
			return nil, fmt.Errorf("%w: flv: %v", ErrUnsupported, err)
		}
		pos = body + n + 4
		if len(video.Samples)+len(audio.Samples) > MaxSamples {
			return nil, fmt.Errorf("%w: more than %d samples", ErrUnsupported, MaxSamples)
		}
	}
	if video.Video != nil && len(video.Samples) > 0 {
		x.Video = &video
	}
	if audio.AAC != nil && len(audio.Samples) > 0 {
		x.Audio = &audio
	}
	return x, nil
}

// errFLVDamaged marks a tag that cannot be what it says.
var errFLVDamaged = errors.New("damaged tag")

// flvVideo reads a video tag's body of n bytes at offset off: H.264 in
// the legacy header, or H.264 and HEVC in enhanced RTMP's.
func flvVideo(br *bufio.Reader, t *Track, off, n, dts int64) error {
	if n < 5 {
		_, err := br.Discard(int(n))
		return err
	}
	var h [8]byte
	if _, err := io.ReadFull(br, h[:5]); err != nil {
		return err
	}
	hdr := int64(5)
	var codec media.Codec
	var seq, frame bool
	var cts int32
	if h[0]&0x80 != 0 {
		// ExVideoTagHeader: packet type, FourCC, and for coded frames of
		// H.264 and HEVC a composition time.
		switch string(h[1:5]) {
		case "avc1":
			codec = media.CodecH264
		case "hvc1":
			codec = media.CodecH265
		}
		switch pt := h[0] & 0x0f; {
		case codec == media.CodecNone:
		case pt == 0:
			seq = true
		case pt == 1 && n >= 8:
			if _, err := io.ReadFull(br, h[5:8]); err != nil {
				return err
			}
			hdr, frame = 8, true
			cts = int32(uint32(h[5])<<16|uint32(h[6])<<8|uint32(h[7])) << 8 >> 8
		case pt == 3:
			frame = true
		}
	} else if h[0]&0x0f == flvCodecAVC {
		codec = media.CodecH264
		seq, frame = h[1] == 0, h[1] == 1
		cts = int32(uint32(h[2])<<16|uint32(h[3])<<8|uint32(h[4])) << 8 >> 8
	}
	rest := n - hdr
	switch {
	case seq:
		if rest > MaxConfigSize {
			return fmt.Errorf("%w: sequence header of %d bytes", errFLVDamaged, rest)
		}
		b := make([]byte, rest)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		if t.Video != nil {
			return nil // the first one is the file's
		}
		c, err := media.ParseVideoConfig(codec, b)
		if err != nil {
			return fmt.Errorf("%w: %v", errFLVDamaged, err)
		}
		if l := lengthSize(c); l != 4 {
			return fmt.Errorf("NAL unit lengths of %d bytes", l)
		}
		t.Video = c
		return nil
	case frame && t.Video != nil && t.Video.Codec == codec && rest > 0:
		t.Samples = append(t.Samples, Sample{
			Off: off + hdr, Size: uint32(rest), DTS: dts,
			CTS: int32(rescale(int64(cts), 1000)), Key: h[0]>>4&0x07 == 1,
		})
	}
	_, err := br.Discard(int(rest))
	return err
}

// lengthSize is the NAL unit length size of an H.264 or HEVC configuration.
func lengthSize(c *media.VideoConfig) int {
	if c.HEVC != nil {
		return c.HEVC.LengthSize
	}
	return c.AVC.LengthSize
}

// flvAudio reads an audio tag's body of n bytes at offset off.
func flvAudio(br *bufio.Reader, t *Track, off, n, dts int64) error {
	if n < 2 {
		_, err := br.Discard(int(n))
		return err
	}
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return err
	}
	rest := n - 2
	if h[0]>>4 != flvCodecAAC {
		_, err := br.Discard(int(rest))
		return err
	}
	switch h[1] {
	case 0: // AudioSpecificConfig
		if rest > MaxConfigSize {
			return fmt.Errorf("%w: sequence header of %d bytes", errFLVDamaged, rest)
		}
		b := make([]byte, rest)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		if t.AAC != nil {
			return nil
		}
		c, err := media.ParseAACConfig(b)
		if err != nil {
			return fmt.Errorf("%w: %v", errFLVDamaged, err)
		}
		t.AAC = c
		return nil
	case 1:
		if t.AAC != nil && rest > 0 {
			t.Samples = append(t.Samples, Sample{Off: off + 2, Size: uint32(rest), DTS: dts, Key: true})
		}
	}
	_, err := br.Discard(int(rest))
	return err
}
