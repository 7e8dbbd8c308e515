package media

import "fmt"

// VideoConfig is a parsed video sequence header of any supported codec.
type VideoConfig struct {
	Codec Codec
	AVC   *AVCConfig  // CodecH264
	HEVC  *HEVCConfig // CodecH265
	AV1   *AV1Config  // CodecAV1
	// ParamSets are the parameter sets a decoder needs in band, in the
	// order they go in front of a keyframe: SPS and PPS for H.264; VPS,
	// SPS and PPS for HEVC; the sequence header OBU for AV1.
	ParamSets [][]byte
}

// ParseVideoConfig decodes a sequence header of codec: avcC, hvcC or av1C.
func ParseVideoConfig(codec Codec, b []byte) (*VideoConfig, error) {
	c := &VideoConfig{Codec: codec}
	var err error
	switch codec {
	case CodecH264:
		if c.AVC, err = ParseAVCConfig(b); err == nil {
			c.ParamSets = [][]byte{c.AVC.SPS[0], c.AVC.PPS[0]}
		}
	case CodecH265:
		if c.HEVC, err = ParseHEVCConfig(b); err == nil {
			c.ParamSets = [][]byte{c.HEVC.VPS[0], c.HEVC.SPS[0], c.HEVC.PPS[0]}
		}
	case CodecAV1:
		if c.AV1, err = ParseAV1Config(b); err == nil {
			c.ParamSets = [][]byte{c.AV1.SequenceHeader}
		}
	default:
		err = fmt.Errorf("%s is not a video codec: %w", codec, ErrInvalidConfig)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Info describes the picture.
func (c *VideoConfig) Info() (VideoInfo, error) {
	switch {
	case c.AVC != nil:
		return c.AVC.Info()
	case c.HEVC != nil:
		return c.HEVC.Info()
	case c.AV1 != nil:
		return c.AV1.Info()
	}
	return VideoInfo{}, fmt.Errorf("no video configuration: %w", ErrInvalidConfig)
}

// String names the codec and picture for logs, e.g. "h264 1280x720 High 3.1".
func (c *VideoConfig) String() string {
	info, err := c.Info()
	if err != nil {
		return c.Codec.String()
	}
	return fmt.Sprintf("%s %dx%d %s %s", c.Codec, info.Width, info.Height, info.Profile, info.Level)
}

// WithParamSets returns the units of a frame (NAL units of H.264 and HEVC,
// OBUs of AV1, whose sequence header is its parameter set) with the
// configuration's parameter sets in front if it is a keyframe, and with
// any parameter sets it carried itself dropped. A keyframe is one marked
// so by keyframe or, for H.264 and HEVC, one holding an IDR or IRAP
// picture. An access unit or temporal delimiter that starts the frame
// stays first (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4, AV1 §7.5).
//
// FLV, RTMP and MP4 carry parameter sets out of band, and signal a change
// with a new configuration; MPEG-TS, RTP, fMP4 muxers that cut segments
// at them and decoders starting mid-stream need them in band. In-band
// sets that differ from the configuration are a publisher's error or
// attack, and gohlslib updates its tracks from them without its lock, so
// they never get through. units is not modified.
func (c *VideoConfig) WithParamSets(units [][]byte, keyframe bool) [][]byte {
	params := c.ParamSets
	inBand := false
	for _, n := range units {
		isParam, isKey, _ := c.classify(n)
		inBand = inBand || isParam
		keyframe = keyframe || isKey
	}
	if !inBand && (!keyframe || len(params) == 0) {
		return units // most frames: nothing to add or drop, nothing to allocate
	}
	out := make([][]byte, 0, len(units)+len(params))
	at := -1 // where the parameter sets go
	for _, n := range units {
		isParam, _, isDelim := c.classify(n)
		if isParam || len(n) == 0 {
			continue
		}
		if at < 0 && !(isDelim && len(out) == 0) {
			at = len(out)
		}
		out = append(out, n)
	}
	if !keyframe || len(params) == 0 {
		return out
	}
	if at < 0 {
		at = len(out)
	}
	out = append(out, params...)
	copy(out[at+len(params):], out[at:len(out)-len(params)])
	copy(out[at:], params)
	return out
}

// classify tells whether a unit is a parameter set, a picture a decoder
// can start at, or an access unit or temporal delimiter.
func (c *VideoConfig) classify(n []byte) (isParam, isKey, isDelim bool) {
	if len(n) == 0 {
		return false, false, false
	}
	switch c.Codec {
	case CodecH265:
		t := (n[0] >> 1) & 0x3f
		return t >= hevcNALUVPS && t <= hevcNALUPPS, t >= 16 && t <= 21, t == 35
	case CodecAV1:
		t := (n[0] >> 3) & 0x0f
		return t == 1, false, t == 2
	}
	t := n[0] & 0x1f
	return t == naluSPS || t == naluPPS, t == naluIDR, t == naluAUD
}

// SplitFrame splits a video frame's payload into the units muxers take:
// NAL units for H.264 and HEVC, OBUs without size fields for AV1.
func SplitFrame(codec Codec, payload []byte) ([][]byte, error) {
	if codec == CodecAV1 {
		return SplitOBUs(payload)
	}
	return AVCCToNALUs(payload)
}
