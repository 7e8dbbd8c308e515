// Package flv converts between media packets and FLV tags (Adobe Flash Video
// File Format Specification v10.1, annex E).
//
// An RTMP audio, video or data message payload is exactly an FLV tag body, so
// the body parsers and writers here serve RTMP ingest and playback as well as
// HTTP-FLV and FLV files. Video is H.264, or HEVC and AV1 in enhanced RTMP's
// ExVideoTagHeader (github.com/veovera/enhanced-rtmp); audio is AAC; script
// data is AMF0. Other codecs are refused with an error naming them.
package flv

import (
	"errors"
	"fmt"

	"github.com/meshcast/meshcast/internal/media"
)

// Sentinel errors; returned errors wrap them, so test with errors.Is.
var (
	// ErrUnsupportedCodec reports audio or video in a codec other than AAC,
	// H.264, HEVC or AV1. The concrete error is an *UnsupportedCodecError.
	ErrUnsupportedCodec = errors.New("flv: unsupported codec")
	// ErrSkip reports a well-formed tag that carries no media (a video
	// command frame, an H.264 end-of-sequence marker, an empty frame);
	// callers should ignore the tag.
	ErrSkip = errors.New("flv: tag carries no media")
	// ErrMalformed reports a tag, tag body or file header that violates the
	// FLV format.
	ErrMalformed = errors.New("flv: malformed data")
	// ErrTooLarge reports a tag body over the Reader's size limit.
	ErrTooLarge = errors.New("flv: tag too large")
	// ErrEncrypted reports a tag with the Filter bit set (FLV spec §E.4.1),
	// whose body is encrypted and cannot be decoded.
	ErrEncrypted = errors.New("flv: encrypted tag not supported")
)

// Tag types (FLV spec §E.4.1).
const (
	TagAudio  uint8 = 8
	TagVideo  uint8 = 9
	TagScript uint8 = 18
)

// Sizes fixed by the format.
const (
	// HeaderSize is the FLV file header plus PreviousTagSize0.
	HeaderSize = 13
	// TagHeaderSize is the fixed part in front of every tag body.
	TagHeaderSize = 11
	// PrevTagSizeLen is the PreviousTagSize field after every tag.
	PrevTagSizeLen = 4
	// MaxBodySize is the largest body the 24-bit DataSize field can describe.
	MaxBodySize = 1<<24 - 1
)

// UnsupportedCodecError describes an audio or video codec that is not
// supported, so ingest can tell the publisher what it sent.
type UnsupportedCodecError struct {
	Kind   media.Kind // media.KindVideo or media.KindAudio
	ID     int        // FLV CodecID or SoundFormat; -1 for enhanced RTMP
	FourCC string     // enhanced RTMP FourCC, if known
	Name   string     // human-readable codec name
}

// Error names the codec, e.g. "flv: audio codec 2 (MP3) not supported".
func (e *UnsupportedCodecError) Error() string {
	if e.ID < 0 {
		if e.FourCC != "" {
			return fmt.Sprintf("flv: %s codec %q (%s) not supported", e.Kind, e.FourCC, e.Name)
		}
		return fmt.Sprintf("flv: %s codec (%s) not supported", e.Kind, e.Name)
	}
	return fmt.Sprintf("flv: %s codec %d (%s) not supported", e.Kind, e.ID, e.Name)
}

// Unwrap makes errors.Is(err, ErrUnsupportedCodec) hold.
func (e *UnsupportedCodecError) Unwrap() error { return ErrUnsupportedCodec }

// videoCodecName names a legacy VIDEODATA CodecID (FLV spec §E.4.3.1).
func videoCodecName(id uint8) string {
	switch id {
	case 1:
		return "JPEG"
	case 2:
		return "Sorenson H.263"
	case 3:
		return "Screen video"
	case 4:
		return "On2 VP6"
	case 5:
		return "On2 VP6 with alpha"
	case 6:
		return "Screen video v2"
	case 7:
		return "AVC"
	case 12:
		// Not in the Adobe spec: the pre-enhanced-RTMP HEVC extension
		// used by some Chinese CDNs and patched ffmpeg/OBS builds.
		return "HEVC, non-standard"
	}
	return "unknown"
}

// audioCodecName names a legacy AUDIODATA SoundFormat (FLV spec §E.4.2.1).
func audioCodecName(id uint8) string {
	switch id {
	case 0:
		return "Linear PCM, platform endian"
	case 1:
		return "ADPCM"
	case 2:
		return "MP3"
	case 3:
		return "Linear PCM, little endian"
	case 4:
		return "Nellymoser 16 kHz mono"
	case 5:
		return "Nellymoser 8 kHz mono"
	case 6:
		return "Nellymoser"
	case 7:
		return "G.711 A-law"
	case 8:
		return "G.711 mu-law"
	case 10:
		return "AAC"
	case 11:
		return "Speex"
	case 14:
		return "MP3 8 kHz"
	case 15:
		return "Device-specific sound"
	}
	return "unknown"
}

// fourCCName names an enhanced RTMP codec FourCC.
func fourCCName(fourCC string) string {
	switch fourCC {
	case "hvc1":
		return "HEVC, enhanced RTMP"
	case "av01":
		return "AV1, enhanced RTMP"
	case "vp09":
		return "VP9, enhanced RTMP"
	case "vp08":
		return "VP8, enhanced RTMP"
	case "avc1":
		return "H.264 signalled via enhanced RTMP"
	case "Opus":
		return "Opus, enhanced RTMP"
	case "fLaC":
		return "FLAC, enhanced RTMP"
	case "ac-3":
		return "AC-3, enhanced RTMP"
	case "ec-3":
		return "E-AC-3, enhanced RTMP"
	case ".mp3":
		return "MP3, enhanced RTMP"
	case "mp4a":
		return "AAC signalled via enhanced RTMP"
	}
	return "enhanced RTMP"
}

// enhancedError builds the error for an enhanced RTMP tag body. The FourCC
// directly follows the first byte except for multitrack and ModEx packets,
// whose layouts differ; those are reported without it.
func enhancedError(kind media.Kind, body []byte, hasFourCC bool) error {
	e := &UnsupportedCodecError{Kind: kind, ID: -1, Name: "enhanced RTMP"}
	if hasFourCC && len(body) >= 5 {
		e.FourCC = printable(body[1:5])
		e.Name = fourCCName(e.FourCC)
	}
	return e
}

// printable returns b as a string if it is printable ASCII, else as hex, so
// hostile FourCCs cannot inject control bytes into logs.
func printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("0x%x", b)
		}
	}
	return string(b)
}
