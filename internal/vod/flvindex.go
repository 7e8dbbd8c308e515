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
// tags: the H.264 and AAC frames, with the first sequence header of each.
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
	if video.AVC != nil && len(video.Samples) > 0 {
		x.Video = &video
	}
	if audio.AAC != nil && len(audio.Samples) > 0 {
		x.Audio = &audio
	}
	return x, nil
}

// errFLVDamaged marks a tag that cannot be what it says.
var errFLVDamaged = errors.New("damaged tag")

// flvVideo reads a video tag's body of n bytes at offset off.
func flvVideo(br *bufio.Reader, t *Track, off, n, dts int64) error {
	if n < 5 {
		_, err := br.Discard(int(n))
		return err
	}
	var h [5]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return err
	}
	rest := n - 5
	if h[0]&0x80 != 0 || h[0]&0x0f != flvCodecAVC {
		_, err := br.Discard(int(rest)) // another codec, or an Enhanced RTMP tag
		return err
	}
	switch h[1] {
	case 0: // AVCDecoderConfigurationRecord
		if rest > MaxConfigSize {
			return fmt.Errorf("%w: sequence header of %d bytes", errFLVDamaged, rest)
		}
		b := make([]byte, rest)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		if t.AVC != nil {
			return nil // the first one is the file's
		}
		c, err := media.ParseAVCConfig(b)
		if err != nil {
			return fmt.Errorf("%w: %v", errFLVDamaged, err)
		}
		if c.LengthSize != 4 {
			return fmt.Errorf("NAL unit lengths of %d bytes", c.LengthSize)
		}
		t.AVC = c
		return nil
	case 1: // NAL units
		cts := int32(uint32(h[2])<<16|uint32(h[3])<<8|uint32(h[4])) << 8 >> 8
		if t.AVC != nil && rest > 0 {
			t.Samples = append(t.Samples, Sample{
				Off: off + 5, Size: uint32(rest), DTS: dts,
				CTS: int32(rescale(int64(cts), 1000)), Key: h[0]>>4 == 1,
			})
		}
	}
	_, err := br.Discard(int(rest))
	return err
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
