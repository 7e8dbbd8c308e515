package media

import (
	"fmt"
	"strconv"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
)

// av1CHeaderSize is the fixed part of an AV1CodecConfigurationRecord, in
// front of its configOBUs.
const av1CHeaderSize = 4

// AV1Config is a parsed AV1CodecConfigurationRecord (av1C), the AV1
// sequence header carried by enhanced RTMP, FLV and MP4.
type AV1Config struct {
	// SequenceHeader is the sequence header OBU from the record's
	// configOBUs, without its size field.
	SequenceHeader []byte
}

// ParseAV1Config parses an AV1CodecConfigurationRecord (AV1 ISOBMFF
// binding §2.3). It needs the sequence header OBU in configOBUs, which is
// where every muxer puts it. The result does not alias b.
func ParseAV1Config(b []byte) (*AV1Config, error) {
	if len(b) < av1CHeaderSize {
		return nil, fmt.Errorf("av1C: record too short (%d bytes): %w", len(b), ErrInvalidConfig)
	}
	if b[0] != 0x81 {
		return nil, fmt.Errorf("av1C: marker and version 0x%02x: %w", b[0], ErrInvalidConfig)
	}
	if !ValidOBUs(b[av1CHeaderSize:]) {
		return nil, fmt.Errorf("av1C: configOBUs are not size-delimited OBUs: %w", ErrInvalidConfig)
	}
	var obus av1.Bitstream
	if err := obus.Unmarshal(b[av1CHeaderSize:]); err != nil {
		return nil, fmt.Errorf("av1C: configOBUs: %v: %w", err, ErrInvalidConfig)
	}
	for _, o := range obus {
		if av1.OBUType(o[0]>>3&0x0f) == av1.OBUTypeSequenceHeader {
			var h av1.SequenceHeader
			if err := h.Unmarshal(o); err != nil {
				return nil, fmt.Errorf("av1C: sequence header: %v: %w", err, ErrInvalidConfig)
			}
			return &AV1Config{SequenceHeader: o}, nil
		}
	}
	return nil, fmt.Errorf("av1C: no sequence header OBU: %w", ErrInvalidConfig)
}

// Marshal encodes c as an AV1CodecConfigurationRecord whose fields come
// from the sequence header.
func (c *AV1Config) Marshal() []byte {
	var h av1.SequenceHeader
	b := []byte{0x81, 0, 0, 0}
	if h.Unmarshal(c.SequenceHeader) == nil && len(h.SeqLevelIdx) > 0 {
		b[1] = h.SeqProfile<<5 | h.SeqLevelIdx[0]&0x1f
		cc := h.ColorConfig
		if len(h.SeqTier) > 0 && h.SeqTier[0] {
			b[2] |= 0x80
		}
		for i, f := range []bool{cc.HighBitDepth, cc.TwelveBit, cc.MonoChrome, cc.SubsamplingX, cc.SubsamplingY} {
			if f {
				b[2] |= 0x40 >> i
			}
		}
		b[2] |= byte(cc.ChromaSamplePosition) & 3
	}
	obus, _ := av1.Bitstream{c.SequenceHeader}.Marshal()
	return append(b, obus...)
}

// Info decodes the sequence header and reports picture size, frame rate,
// profile and level.
func (c *AV1Config) Info() (VideoInfo, error) {
	var h av1.SequenceHeader
	if err := h.Unmarshal(c.SequenceHeader); err != nil {
		return VideoInfo{}, fmt.Errorf("av1C: sequence header: %v: %w", err, ErrInvalidConfig)
	}
	w, ht := h.Width(), h.Height()
	if w <= 0 || ht <= 0 || w > maxDimension || ht > maxDimension {
		return VideoInfo{}, fmt.Errorf("av1C: invalid picture size %dx%d: %w", w, ht, ErrInvalidConfig)
	}
	info := VideoInfo{Width: w, Height: ht, Profile: av1ProfileName(h.SeqProfile)}
	if len(h.SeqLevelIdx) > 0 {
		info.Level = av1LevelName(h.SeqLevelIdx[0])
	}
	if t := h.TimingInfo; t != nil && t.NumUnitsInDisplayTick > 0 {
		info.FPS = float64(t.TimeScale) / float64(t.NumUnitsInDisplayTick)
	}
	return info, nil
}

// av1ProfileName names a seq_profile (AV1 Annex A.2).
func av1ProfileName(p uint8) string {
	switch p {
	case 0:
		return "Main"
	case 1:
		return "High"
	case 2:
		return "Professional"
	}
	return strconv.Itoa(int(p))
}

// av1LevelName formats seq_level_idx as "X.Y" (AV1 Annex A.3): index 8 is
// level 4.0; 31 means no level constraint.
func av1LevelName(idx uint8) string {
	if idx == 31 {
		return "max"
	}
	return strconv.Itoa(2+int(idx>>2)) + "." + strconv.Itoa(int(idx&3))
}

// ValidOBUs reports whether b is a sequence of OBUs that each carry a size
// field and exactly fill it (the low overhead bitstream format of AV1
// §5.2), as media.Packet requires for AV1 frames. It does not allocate.
func ValidOBUs(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for len(b) > 0 {
		h := b[0]
		if h&0x80 != 0 || h&0x02 == 0 {
			return false // forbidden bit, or no obu_size
		}
		n := 1
		if h&0x04 != 0 {
			n = 2 // extension header
		}
		if len(b) <= n {
			return false
		}
		var size av1.LEB128
		l, err := size.Unmarshal(b[n:])
		if err != nil || uint64(size) > uint64(len(b)-n-l) {
			return false
		}
		b = b[n+l+int(size):]
	}
	return true
}

// SplitOBUs splits an AV1 temporal unit in the low overhead bitstream
// format into OBUs without size fields, as RTP and fMP4 muxers take them.
// OBUs with an extension header are refused, as mediacommon does.
func SplitOBUs(tu []byte) ([][]byte, error) {
	var bs av1.Bitstream
	if err := bs.Unmarshal(tu); err != nil {
		return nil, fmt.Errorf("av1: temporal unit: %v: %w", err, ErrInvalidConfig)
	}
	return bs, nil
}
