package media

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// HEVC NAL unit types (H.265 Table 7-1) the configuration record lists.
const (
	hevcNALUVPS = 32
	hevcNALUSPS = 33
	hevcNALUPPS = 34
)

// hvcCHeaderSize is the fixed part of an HEVCDecoderConfigurationRecord,
// up to and including numOfArrays.
const hvcCHeaderSize = 23

// MaxHEVCParamSets bounds the parameter sets of each type an hvcC may list
// (VPS ids are 0..15, SPS 0..15, PPS 0..63).
const MaxHEVCParamSets = 64

// HEVCConfig is a parsed HEVCDecoderConfigurationRecord (hvcC), the H.265
// sequence header carried by enhanced RTMP, FLV and MP4.
type HEVCConfig struct {
	LengthSize int // NAL unit length prefix size in bytes: 1, 2 or 4
	VPS        [][]byte
	SPS        [][]byte
	PPS        [][]byte
}

// ParseHEVCConfig parses an HEVCDecoderConfigurationRecord
// (ISO/IEC 14496-15 §8.3.3.1). It needs at least one VPS, SPS and PPS. The
// parameter sets are copies, so b may be reused afterwards.
func ParseHEVCConfig(b []byte) (*HEVCConfig, error) {
	if len(b) < hvcCHeaderSize {
		return nil, fmt.Errorf("hvcC: record too short (%d bytes): %w", len(b), ErrInvalidConfig)
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("hvcC: configurationVersion %d: %w", b[0], ErrInvalidConfig)
	}
	b = append([]byte(nil), b...)
	c := &HEVCConfig{LengthSize: int(b[21]&0x03) + 1}
	if c.LengthSize == 3 {
		return nil, fmt.Errorf("hvcC: NAL unit length size 3: %w", ErrInvalidConfig)
	}
	pos := hvcCHeaderSize
	for range int(b[22]) {
		if len(b)-pos < 3 {
			return nil, fmt.Errorf("hvcC: truncated array: %w", ErrInvalidConfig)
		}
		typ, n := b[pos]&0x3f, int(binary.BigEndian.Uint16(b[pos+1:]))
		pos += 3
		var dst *[][]byte
		switch typ {
		case hevcNALUVPS:
			dst = &c.VPS
		case hevcNALUSPS:
			dst = &c.SPS
		case hevcNALUPPS:
			dst = &c.PPS
		}
		if dst != nil && len(*dst)+n > MaxHEVCParamSets {
			return nil, fmt.Errorf("hvcC: more than %d parameter sets of type %d: %w", MaxHEVCParamSets, typ, ErrInvalidConfig)
		}
		// Arrays of other types (SEI) are skipped, but must still be well
		// formed. Each unit takes at least 3 bytes, which bounds n.
		if n > (len(b)-pos)/3 {
			return nil, fmt.Errorf("hvcC: NAL unit type %d: %d units in %d bytes: %w", typ, n, len(b)-pos, ErrInvalidConfig)
		}
		sets, next, err := readParamSets(b, pos, n)
		if err != nil {
			return nil, fmt.Errorf("hvcC: NAL unit type %d: %w", typ, err)
		}
		pos = next
		if dst != nil {
			*dst = append(*dst, sets...)
		}
	}
	if len(c.VPS) == 0 || len(c.SPS) == 0 || len(c.PPS) == 0 {
		return nil, fmt.Errorf("hvcC: needs a VPS, an SPS and a PPS (%d, %d, %d): %w", len(c.VPS), len(c.SPS), len(c.PPS), ErrInvalidConfig)
	}
	return c, nil
}

// NewHEVCConfig builds the configuration of one VPS, SPS and PPS with
// 4-byte NAL unit lengths, as packetizers of in-band parameter sets need.
func NewHEVCConfig(vps, sps, pps []byte) *HEVCConfig {
	return &HEVCConfig{LengthSize: 4, VPS: [][]byte{vps}, SPS: [][]byte{sps}, PPS: [][]byte{pps}}
}

// Marshal encodes c as an HEVCDecoderConfigurationRecord. The profile, tier,
// level, chroma format and bit depths are taken from SPS[0]; an SPS that
// cannot be decoded leaves them zero. Parameter sets over 65535 bytes are
// dropped.
func (c *HEVCConfig) Marshal() []byte {
	b := make([]byte, hvcCHeaderSize, 64)
	b[0] = 1
	// min_spatial_segmentation_idc 0, parallelismType 0 (unknown): reserved
	// bits are ones.
	b[13], b[14], b[15] = 0xf0, 0x00, 0xfc
	b[16], b[17], b[18] = 0xfc, 0xf8, 0xf8
	if len(c.SPS) > 0 {
		sps := c.SPS[0]
		// profile_tier_level() starts byte-aligned after the 2-byte NAL
		// header and one byte of ids: its first 12 bytes are the general
		// profile, compatibility, constraint and level fields, in the same
		// layout as the record's bytes 1..12.
		if raw := h264.EmulationPreventionRemove(sps); len(raw) >= 15 {
			copy(b[1:13], raw[3:15])
		}
		var s h265.SPS
		if s.Unmarshal(sps) == nil {
			b[16] |= byte(s.ChromaFormatIdc & 3)
			b[17] |= byte(s.BitDepthLumaMinus8 & 7)
			b[18] |= byte(s.BitDepthChromaMinus8 & 7)
		}
	}
	ls := c.LengthSize
	if ls != 1 && ls != 2 && ls != 4 {
		ls = 4
	}
	// avgFrameRate 0; constantFrameRate 0, numTemporalLayers 1,
	// temporalIdNested 1.
	b[21] = 1<<3 | 1<<2 | byte(ls-1)
	arrays := []struct {
		typ  byte
		sets [][]byte
	}{{hevcNALUVPS, c.VPS}, {hevcNALUSPS, c.SPS}, {hevcNALUPPS, c.PPS}}
	for _, a := range arrays {
		sets := representable(a.sets, MaxHEVCParamSets)
		if len(sets) == 0 {
			continue
		}
		b[22]++
		// array_completeness: every set in force is in the record.
		b = append(b, 0x80|a.typ)
		b = binary.BigEndian.AppendUint16(b, uint16(len(sets)))
		for _, s := range sets {
			b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

// Info decodes SPS[0] and reports picture size, frame rate, profile and level.
func (c *HEVCConfig) Info() (VideoInfo, error) {
	if len(c.SPS) == 0 {
		return VideoInfo{}, fmt.Errorf("hvcC: no SPS: %w", ErrInvalidConfig)
	}
	var s h265.SPS
	if err := s.Unmarshal(c.SPS[0]); err != nil {
		return VideoInfo{}, fmt.Errorf("hvcC: SPS: %v: %w", err, ErrInvalidConfig)
	}
	if s.PicWidthInLumaSamples > maxDimension || s.PicHeightInLumaSamples > maxDimension {
		return VideoInfo{}, fmt.Errorf("hvcC: SPS: picture too large: %w", ErrInvalidConfig)
	}
	w, h := s.Width(), s.Height()
	if w <= 0 || h <= 0 || w > maxDimension || h > maxDimension {
		return VideoInfo{}, fmt.Errorf("hvcC: SPS: invalid picture size %dx%d: %w", w, h, ErrInvalidConfig)
	}
	ptl := s.ProfileTierLevel
	return VideoInfo{
		Width:   w,
		Height:  h,
		FPS:     s.FPS(),
		Profile: hevcProfileName(ptl.GeneralProfileIdc),
		Level:   hevcLevelName(ptl.GeneralLevelIdc),
	}, nil
}

// hevcProfileName names a general_profile_idc (H.265 Annex A.3).
func hevcProfileName(idc uint8) string {
	switch idc {
	case 1:
		return "Main"
	case 2:
		return "Main 10"
	case 3:
		return "Main Still Picture"
	case 4:
		return "Format Range Extensions"
	case 5:
		return "High Throughput"
	case 9:
		return "Screen Content Coding"
	}
	return strconv.Itoa(int(idc))
}

// hevcLevelName formats general_level_idc, which is 30 times the level
// number: 93 is "3.1", 120 is "4".
func hevcLevelName(idc uint8) string {
	major, minor := int(idc)/30, int(idc)%30/3
	if minor == 0 {
		return strconv.Itoa(major)
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor)
}

// HEVCKeyframe reports whether an access unit holds an IRAP picture (BLA,
// IDR or CRA), one a decoder can start at.
func HEVCKeyframe(nalus [][]byte) bool {
	for _, n := range nalus {
		if len(n) > 0 {
			if t := (n[0] >> 1) & 0x3f; t >= 16 && t <= 21 {
				return true
			}
		}
	}
	return false
}
