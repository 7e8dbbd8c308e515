// Package media holds the codec-neutral types that flow from ingest to every
// output: packets and the track parameters needed to decode them.
package media

import "fmt"

// Kind tells what a packet carries.
type Kind uint8

// Packet kinds.
const (
	KindVideo Kind = iota + 1
	KindAudio
	KindData // script data such as onMetaData
)

func (k Kind) String() string {
	switch k {
	case KindVideo:
		return "video"
	case KindAudio:
		return "audio"
	case KindData:
		return "data"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Codec identifies a packet's coding format.
type Codec uint8

// Supported codecs. Anything else is refused at ingest.
const (
	CodecNone Codec = iota
	CodecH264
	CodecAAC
	CodecAMF0 // script data (onMetaData) encoded as AMF0
	CodecH265 // HEVC, from enhanced RTMP
	CodecAV1  // AV1, from enhanced RTMP
)

func (c Codec) String() string {
	switch c {
	case CodecH264:
		return "h264"
	case CodecAAC:
		return "aac"
	case CodecAMF0:
		return "amf0"
	case CodecH265:
		return "hevc"
	case CodecAV1:
		return "av1"
	}
	return "none"
}

// Packet is one immutable unit of media. Once appended to a stream it is shared
// by every reader and must never be modified.
//
// Payload forms:
//   - H.264 frame: access unit in AVCC form (4-byte length-prefixed NAL units).
//   - H.264 sequence header: AVCDecoderConfigurationRecord (avcC).
//   - H.265 frame: access unit of 4-byte length-prefixed NAL units.
//   - H.265 sequence header: HEVCDecoderConfigurationRecord (hvcC).
//   - AV1 frame: temporal unit of OBUs with size fields (low overhead
//     bitstream format).
//   - AV1 sequence header: AV1CodecConfigurationRecord (av1C).
//   - AAC frame: one raw AAC frame (no ADTS header).
//   - AAC sequence header: AudioSpecificConfig.
//   - Data: AMF0-encoded script data ("onMetaData", object).
type Packet struct {
	Kind      Kind
	Codec     Codec
	DTS       int64 // decode timestamp in milliseconds
	CTS       int32 // composition offset in milliseconds: PTS = DTS + CTS
	Keyframe  bool  // video: an IDR access unit a decoder can start at
	SeqHeader bool  // decoder configuration (avcC, hvcC, av1C, AudioSpecificConfig) rather than a frame
	Payload   []byte
}

// PTS returns the presentation timestamp in milliseconds.
func (p *Packet) PTS() int64 { return p.DTS + int64(p.CTS) }
