package flv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/meshcast/meshcast/internal/media"
)

// initialBodyCap bounds the first allocation for a tag body, so a forged
// DataSize cannot make the Reader allocate memory the stream never fills.
const initialBodyCap = 64 << 10

// maxHeaderExtra bounds the bytes skipped between a file header longer than
// 9 bytes (a DataOffset above 9, reserved for future versions) and the first
// tag.
const maxHeaderExtra = 1 << 16

// Reader reads an FLV file or HTTP-FLV stream tag by tag.
type Reader struct {
	// MaxBody bounds tag bodies; larger ones fail with ErrTooLarge.
	// Zero means MaxBodySize, the format's own limit.
	MaxBody int

	r   *bufio.Reader
	hdr [TagHeaderSize]byte
}

// NewReader returns a Reader that reads from r through a buffer.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReader(r)}
}

// ReadHeader reads the FLV file header and PreviousTagSize0 and reports the
// stream's declared tracks. Call it once before ReadTag or ReadPacket.
func (r *Reader) ReadHeader() (hasVideo, hasAudio bool, err error) {
	var h [9]byte
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		return false, false, fmt.Errorf("flv: file header: %w", err)
	}
	if h[0] != 'F' || h[1] != 'L' || h[2] != 'V' {
		return false, false, fmt.Errorf("flv: bad signature %q: %w", h[:3], ErrMalformed)
	}
	if h[3] != 1 {
		return false, false, fmt.Errorf("flv: version %d: %w", h[3], ErrMalformed)
	}
	offset := binary.BigEndian.Uint32(h[5:])
	if offset < 9 || offset-9 > maxHeaderExtra {
		return false, false, fmt.Errorf("flv: header DataOffset %d: %w", offset, ErrMalformed)
	}
	if _, err := r.r.Discard(int(offset - 9)); err != nil {
		return false, false, fmt.Errorf("flv: file header: %w", unexpected(err))
	}
	var prev [PrevTagSizeLen]byte
	if _, err := io.ReadFull(r.r, prev[:]); err != nil {
		return false, false, fmt.Errorf("flv: PreviousTagSize0: %w", unexpected(err))
	}
	// The flags are advisory: many live encoders set both bits up front.
	return h[4]&0x01 != 0, h[4]&0x04 != 0, nil
}

// ReadTag reads the next tag. It returns io.EOF only at a clean end of
// stream between tags. body is freshly allocated on every call, so callers
// may keep it.
func (r *Reader) ReadTag() (tagType uint8, ts uint32, body []byte, err error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return 0, 0, nil, io.EOF
		}
		return 0, 0, nil, fmt.Errorf("flv: tag header: %w", err)
	}
	h := &r.hdr
	// Bits 7-6 are reserved, bit 5 is Filter (encryption, §E.4.1).
	if h[0]&0x20 != 0 {
		return 0, 0, nil, ErrEncrypted
	}
	tagType = h[0] & 0x1f
	size := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	ts = uint32(h[4])<<16 | uint32(h[5])<<8 | uint32(h[6]) | uint32(h[7])<<24
	limit := r.MaxBody
	if limit <= 0 || limit > MaxBodySize {
		limit = MaxBodySize
	}
	if size > limit {
		return 0, 0, nil, fmt.Errorf("flv: tag body of %d bytes exceeds %d: %w", size, limit, ErrTooLarge)
	}

	// Grow the buffer only as data arrives: start small and at most double.
	body = make([]byte, min(size, initialBodyCap))
	if _, err := io.ReadFull(r.r, body); err != nil {
		return 0, 0, nil, fmt.Errorf("flv: tag body: %w", unexpected(err))
	}
	for len(body) < size {
		n := len(body)
		body = slices.Grow(body, min(size-n, n))
		body = body[:n+min(size-n, n)]
		if _, err := io.ReadFull(r.r, body[n:]); err != nil {
			return 0, 0, nil, fmt.Errorf("flv: tag body: %w", unexpected(err))
		}
	}

	// PreviousTagSize is redundant and some muxers get it wrong, so it is
	// not checked. A file truncated right after the last body still yields
	// that tag; the next call reports io.EOF.
	var prev [PrevTagSizeLen]byte
	if _, err := io.ReadFull(r.r, prev[:]); err != nil && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, 0, nil, fmt.Errorf("flv: PreviousTagSize: %w", err)
	}
	return tagType, ts, body, nil
}

// ReadPacket reads tags until one yields a media packet, skipping tags that
// carry no media (ErrSkip), empty tags and tag types other than audio, video
// and script data. The packet payload is owned by the caller.
func (r *Reader) ReadPacket() (media.Packet, error) {
	for {
		tagType, ts, body, err := r.ReadTag()
		if err != nil {
			return media.Packet{}, err
		}
		if len(body) == 0 {
			continue
		}
		var p media.Packet
		switch tagType {
		case TagVideo:
			p, err = ParseVideo(ts, body)
		case TagAudio:
			p, err = ParseAudio(ts, body)
		case TagScript:
			p, err = ParseData(ts, body)
		default:
			// Other tag types are reserved (§E.4.1).
			continue
		}
		if errors.Is(err, ErrSkip) {
			continue
		}
		return p, err
	}
}

// unexpected turns io.EOF inside a structure into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
