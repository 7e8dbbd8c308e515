package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// ErrInvalidConfig reports a malformed or unsupported decoder configuration
// (avcC, AudioSpecificConfig) or access unit framing.
var ErrInvalidConfig = errors.New("invalid codec configuration")

// Limits applied while parsing untrusted H.264 data.
const (
	// MaxAVCSPS is the largest number of sequence parameter sets an avcC may
	// carry (H.264 §7.4.2.1.1: seq_parameter_set_id is 0..31).
	MaxAVCSPS = 32
	// MaxAVCPPS is the largest number of picture parameter sets an avcC may
	// carry (H.264 §7.4.2.2: pic_parameter_set_id is 0..255).
	MaxAVCPPS = 256
	// MaxNALUsPerAU bounds the NAL units accepted in one access unit.
	MaxNALUsPerAU = 1024
)

// maxDimension bounds the picture size accepted from an SPS; H.264 level 6.2
// tops out at 139264 macroblocks per frame, far below 16384x16384.
const maxDimension = 16384

// AVCConfig is a parsed AVCDecoderConfigurationRecord (avcC), the H.264
// sequence header carried by FLV/RTMP and MP4.
type AVCConfig struct {
	Profile    uint8 // AVCProfileIndication (profile_idc)
	Compat     uint8 // profile_compatibility (constraint_set flags)
	Level      uint8 // AVCLevelIndication (level_idc)
	LengthSize int   // NAL unit length prefix size in bytes: 1, 2 or 4
	SPS        [][]byte
	PPS        [][]byte
}

// VideoInfo summarises an H.264 stream for logs, stats and playlists.
type VideoInfo struct {
	Width, Height int
	FPS           float64 // 0 when the SPS carries no timing information
	Profile       string  // e.g. "High", "Main", "Baseline", or the number
	Level         string  // e.g. "3.1"
}

// ParseAVCConfig parses an AVCDecoderConfigurationRecord
// (ISO/IEC 14496-15 §5.3.3.1). The returned parameter sets are copies, so
// b may be reused afterwards.
func ParseAVCConfig(b []byte) (*AVCConfig, error) {
	// configurationVersion, profile, compat, level, lengthSizeMinusOne,
	// numOfSequenceParameterSets.
	if len(b) < 6 {
		return nil, fmt.Errorf("avcC: record too short (%d bytes): %w", len(b), ErrInvalidConfig)
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("avcC: configurationVersion %d: %w", b[0], ErrInvalidConfig)
	}
	// One copy backs every parameter set so the config never aliases b.
	b = append([]byte(nil), b...)
	c := &AVCConfig{
		Profile:    b[1],
		Compat:     b[2],
		Level:      b[3],
		LengthSize: int(b[4]&0x03) + 1,
	}
	// §5.3.3.1.2: lengthSizeMinusOne "shall be one of 0, 1, or 3".
	if c.LengthSize == 3 {
		return nil, fmt.Errorf("avcC: NAL unit length size 3: %w", ErrInvalidConfig)
	}
	// numOfSequenceParameterSets is 5 bits, so it can never exceed MaxAVCSPS.
	numSPS := int(b[5] & 0x1f)
	if numSPS == 0 {
		return nil, fmt.Errorf("avcC: no SPS: %w", ErrInvalidConfig)
	}
	pos := 6
	var err error
	if c.SPS, pos, err = readParamSets(b, pos, numSPS); err != nil {
		return nil, fmt.Errorf("avcC: SPS: %w", err)
	}
	if pos >= len(b) {
		return nil, fmt.Errorf("avcC: missing PPS count: %w", ErrInvalidConfig)
	}
	// numOfPictureParameterSets is 8 bits, so it can never exceed MaxAVCPPS.
	numPPS := int(b[pos])
	pos++
	if numPPS == 0 {
		return nil, fmt.Errorf("avcC: no PPS: %w", ErrInvalidConfig)
	}
	if c.PPS, _, err = readParamSets(b, pos, numPPS); err != nil {
		return nil, fmt.Errorf("avcC: PPS: %w", err)
	}
	// Any remaining bytes are the High-profile extension (chroma format, bit
	// depths, SPS extensions). Many encoders omit or truncate it, and the
	// same values are in the SPS, so it is ignored.
	return c, nil
}

// readParamSets reads n 16-bit length-prefixed parameter sets starting at pos.
func readParamSets(b []byte, pos, n int) ([][]byte, int, error) {
	sets := make([][]byte, 0, n)
	for range n {
		if len(b)-pos < 2 {
			return nil, 0, fmt.Errorf("truncated length: %w", ErrInvalidConfig)
		}
		l := int(binary.BigEndian.Uint16(b[pos:]))
		pos += 2
		if l == 0 {
			return nil, 0, fmt.Errorf("empty parameter set: %w", ErrInvalidConfig)
		}
		if len(b)-pos < l {
			return nil, 0, fmt.Errorf("length %d exceeds remaining %d bytes: %w", l, len(b)-pos, ErrInvalidConfig)
		}
		sets = append(sets, b[pos:pos+l:pos+l])
		pos += l
	}
	return sets, pos, nil
}

// Marshal encodes c as an AVCDecoderConfigurationRecord. For the High
// profiles it appends the chroma/bit-depth extension derived from SPS[0],
// which §5.3.3.1.1 requires and some decoders check. Entries a record cannot
// represent (more than 31 SPS or 255 PPS, sets over 65535 bytes) are dropped
// and a LengthSize outside 1..4 is written as 4; configs from ParseAVCConfig
// never contain such values.
func (c *AVCConfig) Marshal() []byte {
	sps := representable(c.SPS, MaxAVCSPS-1)
	pps := representable(c.PPS, MaxAVCPPS-1)
	n := 7
	for _, s := range sps {
		n += 2 + len(s)
	}
	for _, p := range pps {
		n += 2 + len(p)
	}
	ext := c.highProfileExt()
	n += len(ext)

	lengthSizeMinusOne := byte(3)
	if c.LengthSize >= 1 && c.LengthSize <= 4 {
		lengthSizeMinusOne = byte(c.LengthSize - 1)
	}
	b := make([]byte, 0, n)
	// Reserved bits are all ones (§5.3.3.1.1).
	b = append(b, 1, c.Profile, c.Compat, c.Level, 0xfc|lengthSizeMinusOne, 0xe0|byte(len(sps)))
	for _, s := range sps {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = append(b, byte(len(pps)))
	for _, p := range pps {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return append(b, ext...)
}

// representable returns at most limit non-empty sets short enough for a
// 16-bit length field.
func representable(sets [][]byte, limit int) [][]byte {
	out := make([][]byte, 0, min(len(sets), limit))
	for _, s := range sets {
		if len(out) == limit {
			break
		}
		if len(s) > 0 && len(s) <= 0xffff {
			out = append(out, s)
		}
	}
	return out
}

// highProfileExt returns the avcC extension for profile_idc 100, 110, 122
// and 144, or nil when it does not apply or SPS[0] cannot be parsed.
func (c *AVCConfig) highProfileExt() []byte {
	switch c.Profile {
	case 100, 110, 122, 144:
	default:
		return nil
	}
	if len(c.SPS) == 0 {
		return nil
	}
	var s h264.SPS
	if err := s.Unmarshal(c.SPS[0]); err != nil || s.ChromaFormatIdc > 3 ||
		s.BitDepthLumaMinus8 > 7 || s.BitDepthChromaMinus8 > 7 {
		return nil
	}
	return []byte{
		0xfc | byte(s.ChromaFormatIdc),
		0xf8 | byte(s.BitDepthLumaMinus8),
		0xf8 | byte(s.BitDepthChromaMinus8),
		0, // numOfSequenceParameterSetExt
	}
}

// Info decodes SPS[0] and reports picture size, frame rate, profile and level.
func (c *AVCConfig) Info() (VideoInfo, error) {
	if len(c.SPS) == 0 {
		return VideoInfo{}, fmt.Errorf("avcC: no SPS: %w", ErrInvalidConfig)
	}
	var s h264.SPS
	if err := s.Unmarshal(c.SPS[0]); err != nil {
		return VideoInfo{}, fmt.Errorf("avcC: SPS: %v: %w", err, ErrInvalidConfig)
	}
	// Width/Height compute in uint32 and wrap on absurd cropping or
	// macroblock counts, so bound the inputs before trusting the results.
	if s.PicWidthInMbsMinus1 >= maxDimension/16 || s.PicHeightInMapUnitsMinus1 >= maxDimension/16 {
		return VideoInfo{}, fmt.Errorf("avcC: SPS: picture too large: %w", ErrInvalidConfig)
	}
	w, h := s.Width(), s.Height()
	if w <= 0 || h <= 0 || w > maxDimension || h > maxDimension {
		return VideoInfo{}, fmt.Errorf("avcC: SPS: invalid picture size %dx%d: %w", w, h, ErrInvalidConfig)
	}
	return VideoInfo{
		Width:   w,
		Height:  h,
		FPS:     s.FPS(),
		Profile: avcProfileName(s.ProfileIdc, s.ConstraintSet1Flag, s.ConstraintSet3Flag),
		Level:   avcLevelName(s.ProfileIdc, s.LevelIdc, s.ConstraintSet3Flag),
	}, nil
}

// avcProfileName names a profile_idc as in H.264 Annex A.2 and G/H.
func avcProfileName(idc uint8, cs1, cs3 bool) string {
	switch idc {
	case 66:
		if cs1 {
			return "Constrained Baseline" // A.2.1.1
		}
		return "Baseline"
	case 77:
		return "Main"
	case 88:
		return "Extended"
	case 100:
		return "High"
	case 110:
		if cs3 {
			return "High 10 Intra"
		}
		return "High 10"
	case 122:
		if cs3 {
			return "High 4:2:2 Intra"
		}
		return "High 4:2:2"
	case 244:
		if cs3 {
			return "High 4:4:4 Intra"
		}
		return "High 4:4:4 Predictive"
	case 44:
		return "CAVLC 4:4:4 Intra"
	case 83:
		return "Scalable Baseline"
	case 86:
		return "Scalable High"
	case 118:
		return "Multiview High"
	case 128:
		return "Stereo High"
	}
	return strconv.Itoa(int(idc))
}

// avcLevelName formats level_idc as "major.minor". Level 1b is signalled as
// level_idc 9, or as 11 with constraint_set3_flag in the Baseline, Main and
// Extended profiles (H.264 §A.3.1, §A.3.2).
func avcLevelName(profile, idc uint8, cs3 bool) string {
	if idc == 9 || (idc == 11 && cs3 && (profile == 66 || profile == 77 || profile == 88)) {
		return "1b"
	}
	return strconv.Itoa(int(idc)/10) + "." + strconv.Itoa(int(idc)%10)
}

// AVCCToNALUs splits an access unit in AVCC form (4-byte big-endian length
// prefixes) into its NAL units, which alias au. Zero-length entries are
// skipped. It fails on truncated framing, an empty unit, or more than
// MaxNALUsPerAU NAL units.
//
// mediacommon's h264.AVCC.Unmarshal is not used because it caps access units
// at 50 NAL units, which heavily sliced encoders exceed.
func AVCCToNALUs(au []byte) ([][]byte, error) {
	n := 0
	for pos := 0; pos < len(au); {
		if len(au)-pos < 4 {
			return nil, fmt.Errorf("avcc: truncated NAL unit length: %w", ErrInvalidConfig)
		}
		l := uint64(binary.BigEndian.Uint32(au[pos:]))
		pos += 4
		if l > uint64(len(au)-pos) {
			return nil, fmt.Errorf("avcc: NAL unit length %d exceeds remaining %d bytes: %w", l, len(au)-pos, ErrInvalidConfig)
		}
		if l > 0 {
			n++
			if n > MaxNALUsPerAU {
				return nil, fmt.Errorf("avcc: more than %d NAL units: %w", MaxNALUsPerAU, ErrInvalidConfig)
			}
		}
		pos += int(l)
	}
	if n == 0 {
		return nil, fmt.Errorf("avcc: no NAL units: %w", ErrInvalidConfig)
	}
	nalus := make([][]byte, 0, n)
	for pos := 0; pos < len(au); {
		l := int(binary.BigEndian.Uint32(au[pos:]))
		pos += 4
		if l > 0 {
			nalus = append(nalus, au[pos:pos+l:pos+l])
		}
		pos += l
	}
	return nalus, nil
}

// NALUsToAVCC joins NAL units into one access unit in AVCC form with 4-byte
// length prefixes.
func NALUsToAVCC(nalus [][]byte) []byte {
	// h264.AVCC.Marshal never fails; the error is part of its signature only.
	b, _ := h264.AVCC(nalus).Marshal()
	return b
}
