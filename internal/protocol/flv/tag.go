package flv

import (
	"encoding/binary"
	"fmt"

	"github.com/meshcast/meshcast/internal/media"
)

// VIDEODATA fields (FLV spec §E.4.3.1).
const (
	frameKey     = 1
	frameInter   = 2
	frameCommand = 5 // "video info/command frame": seek markers, no picture

	codecAVC = 7

	avcSeqHeader = 0
	avcNALU      = 1
	avcEndOfSeq  = 2
)

// AUDIODATA fields (FLV spec §E.4.2.1).
const (
	soundAAC = 10
	// soundExHeader marks an enhanced RTMP v2 audio header (SoundFormat 9,
	// reserved in the Adobe spec).
	soundExHeader = 9

	// aacFlags is AAC with the rate, size and type bits every encoder
	// writes (44 kHz, 16-bit, stereo): §E.4.2.1 says they are fixed for
	// AAC and decoders take the real values from the AudioSpecificConfig.
	aacFlags = soundAAC<<4 | 3<<2 | 1<<1 | 1

	aacSeqHeader = 0
	aacRaw       = 1
)

// Signed 24-bit CompositionTime range.
const (
	minCTS = -1 << 23
	maxCTS = 1<<23 - 1
)

// ParseVideo parses a VIDEODATA tag body (RTMP video message) carrying
// H.264, or, with an enhanced RTMP ExVideoTagHeader, H.264, HEVC or AV1.
// The packet payload aliases body. It returns ErrSkip for tags without media,
// an *UnsupportedCodecError for other codecs and ErrMalformed otherwise.
func ParseVideo(ts uint32, body []byte) (media.Packet, error) {
	if len(body) == 0 {
		return media.Packet{}, fmt.Errorf("flv: empty video tag: %w", ErrMalformed)
	}
	b0 := body[0]
	if b0&0x80 != 0 {
		return parseExVideo(ts, body)
	}
	frameType, codec := b0>>4, b0&0x0f
	if frameType == frameCommand {
		// Command frames carry a one-byte seek marker instead of a
		// picture, whatever the CodecID says.
		return media.Packet{}, ErrSkip
	}
	if codec != codecAVC {
		return media.Packet{}, &UnsupportedCodecError{Kind: media.KindVideo, ID: int(codec), Name: videoCodecName(codec)}
	}
	// 1 key, 2 inter, 3 disposable inter, 4 generated key frame.
	if frameType < frameKey || frameType > 4 {
		return media.Packet{}, fmt.Errorf("flv: video frame type %d: %w", frameType, ErrMalformed)
	}
	if len(body) < 5 {
		return media.Packet{}, fmt.Errorf("flv: AVC video tag of %d bytes: %w", len(body), ErrMalformed)
	}
	p := media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: int64(ts), Payload: body[5:]}
	switch body[1] {
	case avcSeqHeader:
		// The CompositionTime of a sequence header is meaningless (spec:
		// "if AVCPacketType != 1, CompositionTime = 0"), so it is ignored.
		if len(p.Payload) == 0 {
			return media.Packet{}, fmt.Errorf("flv: empty AVC sequence header: %w", ErrMalformed)
		}
		p.SeqHeader = true
	case avcNALU:
		// Some encoders send empty frames as timing fillers.
		if len(p.Payload) == 0 {
			return media.Packet{}, ErrSkip
		}
		if !validAVCC(p.Payload) {
			return media.Packet{}, fmt.Errorf("flv: AVC frame is not 4-byte length-prefixed NAL units: %w", ErrMalformed)
		}
		// Sign-extend the 24-bit CompositionTime.
		p.CTS = int32(uint32(body[2])<<24|uint32(body[3])<<16|uint32(body[4])<<8) >> 8
		p.Keyframe = frameType == frameKey
	case avcEndOfSeq:
		return media.Packet{}, ErrSkip
	default:
		return media.Packet{}, fmt.Errorf("flv: AVC packet type %d: %w", body[1], ErrMalformed)
	}
	return p, nil
}

// Enhanced RTMP VideoPacketType values (enhanced RTMP v2, ExVideoTagHeader).
const (
	exSequenceStart        = 0
	exCodedFrames          = 1
	exSequenceEnd          = 2
	exCodedFramesX         = 3 // CompositionTime is implied zero
	exMetadata             = 4
	exMPEG2TSSequenceStart = 5
	exMultitrack           = 6
	exModEx                = 7
)

// exHeaderSize is the ExVideoTagHeader of a single-track packet: the
// flags byte and the FourCC.
const exHeaderSize = 5

// parseExVideo parses a VIDEODATA body with an enhanced RTMP
// ExVideoTagHeader: IsExHeader, a 3-bit FrameType, a 4-bit VideoPacketType
// and, for single-track packets, the codec's FourCC.
func parseExVideo(ts uint32, body []byte) (media.Packet, error) {
	frameType, pt := (body[0]>>4)&0x07, body[0]&0x0f
	switch {
	case frameType == frameCommand && pt != exMetadata:
		return media.Packet{}, ErrSkip
	case pt == exMultitrack || pt == exModEx:
		return media.Packet{}, enhancedError(media.KindVideo, body, false)
	case pt > exModEx:
		return media.Packet{}, fmt.Errorf("flv: enhanced video packet type %d: %w", pt, ErrMalformed)
	case len(body) < exHeaderSize:
		return media.Packet{}, fmt.Errorf("flv: enhanced video tag of %d bytes: %w", len(body), ErrMalformed)
	}
	var codec media.Codec
	switch string(body[1:5]) {
	case "avc1":
		codec = media.CodecH264
	case "hvc1":
		codec = media.CodecH265
	case "av01":
		codec = media.CodecAV1
	default:
		return media.Packet{}, enhancedError(media.KindVideo, body, true)
	}
	if frameType < frameKey || frameType > 4 {
		return media.Packet{}, fmt.Errorf("flv: video frame type %d: %w", frameType, ErrMalformed)
	}
	p := media.Packet{Kind: media.KindVideo, Codec: codec, DTS: int64(ts), Payload: body[exHeaderSize:]}
	switch pt {
	case exSequenceStart:
		if len(p.Payload) == 0 {
			return media.Packet{}, fmt.Errorf("flv: empty %s sequence header: %w", codec, ErrMalformed)
		}
		p.SeqHeader = true
		return p, nil
	case exCodedFrames, exCodedFramesX:
	default:
		// Sequence end, HDR metadata and the MPEG-TS descriptor of AV1
		// carry nothing a player needs.
		return media.Packet{}, ErrSkip
	}
	if pt == exCodedFrames && codec != media.CodecAV1 {
		// H.264 and HEVC coded frames carry a CompositionTime; AV1 has no
		// B-frame reordering and carries none.
		if len(p.Payload) < 3 {
			return media.Packet{}, fmt.Errorf("flv: %s frame without composition time: %w", codec, ErrMalformed)
		}
		p.CTS = int32(uint32(body[5])<<24|uint32(body[6])<<16|uint32(body[7])<<8) >> 8
		p.Payload = p.Payload[3:]
	}
	if len(p.Payload) == 0 {
		return media.Packet{}, ErrSkip
	}
	if codec == media.CodecAV1 {
		if !media.ValidOBUs(p.Payload) {
			return media.Packet{}, fmt.Errorf("flv: AV1 frame is not size-delimited OBUs: %w", ErrMalformed)
		}
	} else if !validAVCC(p.Payload) {
		return media.Packet{}, fmt.Errorf("flv: %s frame is not 4-byte length-prefixed NAL units: %w", codec, ErrMalformed)
	}
	p.Keyframe = frameType == frameKey
	return p, nil
}

// validAVCC reports whether b is a sequence of 4-byte length-prefixed NAL
// units that exactly fills it, as media.Packet requires for H.264 frames.
func validAVCC(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 4 {
			return false
		}
		l := uint64(binary.BigEndian.Uint32(b))
		if l > uint64(len(b)-4) {
			return false
		}
		b = b[4+l:]
	}
	return true
}

// ParseAudio parses an AUDIODATA tag body (RTMP audio message) carrying AAC.
// The packet payload aliases body. It returns ErrSkip for empty frames, an
// *UnsupportedCodecError for other codecs and ErrMalformed otherwise.
func ParseAudio(ts uint32, body []byte) (media.Packet, error) {
	if len(body) == 0 {
		return media.Packet{}, fmt.Errorf("flv: empty audio tag: %w", ErrMalformed)
	}
	format := body[0] >> 4
	if format == soundExHeader {
		// Enhanced RTMP v2: 4-bit AudioPacketType, then a FourCC except
		// for Multitrack (5) and ModEx (7) packets.
		pt := body[0] & 0x0f
		return media.Packet{}, enhancedError(media.KindAudio, body, pt != 5 && pt != 7)
	}
	if format != soundAAC {
		return media.Packet{}, &UnsupportedCodecError{Kind: media.KindAudio, ID: int(format), Name: audioCodecName(format)}
	}
	if len(body) < 2 {
		return media.Packet{}, fmt.Errorf("flv: AAC audio tag without packet type: %w", ErrMalformed)
	}
	p := media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: int64(ts), Payload: body[2:]}
	switch body[1] {
	case aacSeqHeader:
		if len(p.Payload) == 0 {
			return media.Packet{}, fmt.Errorf("flv: empty AAC sequence header: %w", ErrMalformed)
		}
		p.SeqHeader = true
	case aacRaw:
		if len(p.Payload) == 0 {
			return media.Packet{}, ErrSkip
		}
	default:
		return media.Packet{}, fmt.Errorf("flv: AAC packet type %d: %w", body[1], ErrMalformed)
	}
	return p, nil
}

// ParseData wraps a SCRIPTDATA tag body (RTMP data message) as a data
// packet. The AMF0 payload aliases body and is not decoded here.
func ParseData(ts uint32, body []byte) (media.Packet, error) {
	if len(body) == 0 {
		return media.Packet{}, fmt.Errorf("flv: empty script data tag: %w", ErrMalformed)
	}
	return media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, DTS: int64(ts), Payload: body}, nil
}

// TagType returns the FLV tag type for p: TagAudio, TagVideo, TagScript, or 0
// for a packet FLV cannot carry.
func TagType(p *media.Packet) uint8 {
	switch p.Kind {
	case media.KindVideo:
		return TagVideo
	case media.KindAudio:
		return TagAudio
	case media.KindData:
		return TagScript
	}
	return 0
}

// BodySize returns the length of p's tag body as AppendBody writes it.
func BodySize(p *media.Packet) int {
	switch p.Kind {
	case media.KindVideo:
		return videoHeaderSize(p) + len(p.Payload)
	case media.KindAudio:
		return 2 + len(p.Payload)
	case media.KindData:
		return len(p.Payload)
	}
	return 0
}

// AppendBody appends p's tag body (the RTMP message payload) to dst; it is
// the inverse of ParseVideo, ParseAudio and ParseData. Packets of other
// kinds append nothing.
func AppendBody(dst []byte, p *media.Packet) []byte {
	switch p.Kind {
	case media.KindVideo:
		dst = appendVideoHeader(dst, p)
	case media.KindAudio:
		pt := byte(aacRaw)
		if p.SeqHeader {
			pt = aacSeqHeader
		}
		dst = append(dst, aacFlags, pt)
	case media.KindData:
	default:
		return dst
	}
	return append(dst, p.Payload...)
}

// videoHeaderSize is the size of the header appendVideoHeader writes.
func videoHeaderSize(p *media.Packet) int {
	if p.Codec == media.CodecH265 && !p.SeqHeader {
		return exHeaderSize + 3
	}
	return 5 // the legacy AVC header, or an ExVideoTagHeader without CTS
}

// appendVideoHeader appends the header of p's VIDEODATA: the legacy AVC
// header for H.264, so every player can read it, and an enhanced RTMP
// ExVideoTagHeader for HEVC and AV1. HEVC frames always go as CodedFrames
// with a CompositionTime.
func appendVideoHeader(dst []byte, p *media.Packet) []byte {
	frameType, cts := byte(frameInter), int32(0)
	if p.SeqHeader || p.Keyframe {
		// Sequence headers are conventionally sent as key frames (0x17).
		frameType = frameKey
	}
	if !p.SeqHeader {
		// Composition offsets beyond ±2.3 hours cannot occur in practice;
		// clamp rather than wrap if one does.
		cts = min(max(p.CTS, minCTS), maxCTS)
	}
	var fourCC string
	switch p.Codec {
	case media.CodecH265:
		fourCC = "hvc1"
	case media.CodecAV1:
		fourCC = "av01"
	default:
		pt := byte(avcNALU)
		if p.SeqHeader {
			pt = avcSeqHeader
		}
		return append(dst, frameType<<4|codecAVC, pt, byte(cts>>16), byte(cts>>8), byte(cts))
	}
	pt := byte(exCodedFrames)
	if p.SeqHeader {
		pt = exSequenceStart
	}
	dst = append(dst, 0x80|frameType<<4|pt)
	dst = append(dst, fourCC...)
	if p.Codec == media.CodecH265 && !p.SeqHeader {
		dst = append(dst, byte(cts>>16), byte(cts>>8), byte(cts))
	}
	return dst
}

// TagSize returns the exact number of bytes AppendTag writes for p: header,
// body and PreviousTagSize. It is 0 when FLV cannot carry p.
func TagSize(p *media.Packet) int {
	n := BodySize(p)
	if TagType(p) == 0 || n > MaxBodySize {
		return 0
	}
	return TagHeaderSize + n + PrevTagSizeLen
}

// AppendTag appends a complete FLV tag for p (FLV spec §E.4.1): header, body
// and the PreviousTagSize that follows it. The timestamp is uint32(p.DTS).
// It does not allocate when cap(dst)-len(dst) >= TagSize(p). Packets FLV
// cannot carry (TagSize 0) append nothing.
func AppendTag(dst []byte, p *media.Packet) []byte {
	tagType := TagType(p)
	n := BodySize(p)
	if tagType == 0 || n > MaxBodySize {
		return dst
	}
	// Timestamp holds the low 24 bits, TimestampExtended the high 8.
	ts := uint32(p.DTS)
	dst = append(dst,
		tagType,
		byte(n>>16), byte(n>>8), byte(n),
		byte(ts>>16), byte(ts>>8), byte(ts), byte(ts>>24),
		0, 0, 0, // StreamID, always 0
	)
	dst = AppendBody(dst, p)
	return binary.BigEndian.AppendUint32(dst, uint32(TagHeaderSize+n))
}

// AppendHeader appends the 9-byte FLV file header and PreviousTagSize0
// (HeaderSize bytes in all) that start every FLV file or HTTP-FLV stream.
func AppendHeader(dst []byte, hasVideo, hasAudio bool) []byte {
	var flags byte
	if hasAudio {
		flags |= 0x04
	}
	if hasVideo {
		flags |= 0x01
	}
	return append(dst, 'F', 'L', 'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0)
}
