package media

import (
	"fmt"
	"strconv"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// AACConfig is a parsed AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the
// AAC sequence header carried by FLV/RTMP and MP4.
type AACConfig struct {
	// ObjectType is the audio object type a player signals: 2 (AAC-LC),
	// 5 (SBR, HE-AAC) or 29 (PS, HE-AACv2).
	ObjectType int
	// SampleRate is the decoder output rate in Hz; for HE-AAC this is the
	// SBR rate, twice the core AAC rate.
	SampleRate int
	// Channels is the decoder output channel count, or 0 when the layout is
	// defined in-band by a program config element (channelConfiguration 0).
	Channels int
	// Raw is a copy of the bytes the config was parsed from.
	Raw []byte
	// Config is the full decoded record, for muxers that need every field.
	Config mpeg4audio.AudioSpecificConfig
}

// ParseAACConfig parses an AudioSpecificConfig. Only AAC-LC, optionally with
// explicitly signalled SBR/PS, is accepted.
func ParseAACConfig(b []byte) (*AACConfig, error) {
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("AudioSpecificConfig: %v: %w", err, ErrInvalidConfig)
	}
	if asc.SampleRate <= 0 {
		return nil, fmt.Errorf("AudioSpecificConfig: sample rate %d: %w", asc.SampleRate, ErrInvalidConfig)
	}
	c := &AACConfig{
		ObjectType: int(asc.Type),
		SampleRate: asc.SampleRate,
		Channels:   asc.ChannelCount,
		Raw:        append([]byte(nil), b...),
		Config:     asc,
	}
	// With explicit (hierarchical) SBR/PS signalling mediacommon reports the
	// core AAC-LC type in Type and the extension in ExtensionType.
	if asc.ExtensionType == mpeg4audio.ObjectTypeSBR || asc.ExtensionType == mpeg4audio.ObjectTypePS {
		c.ObjectType = int(asc.ExtensionType)
		if asc.ExtensionSampleRate <= 0 {
			return nil, fmt.Errorf("AudioSpecificConfig: SBR sample rate %d: %w", asc.ExtensionSampleRate, ErrInvalidConfig)
		}
		c.SampleRate = asc.ExtensionSampleRate
	}
	// Parametric stereo upmixes a mono core to two channels (§8.6.4).
	if asc.ExtensionType == mpeg4audio.ObjectTypePS && c.Channels == 1 {
		c.Channels = 2
	}
	return c, nil
}

// Profile names the AAC profile for logs and playlists: "LC", "HE-AAC",
// "HE-AACv2", or "AOT n" for other audio object types.
func (c *AACConfig) Profile() string {
	switch c.ObjectType {
	case 2:
		return "LC"
	case 5:
		return "HE-AAC"
	case 29:
		return "HE-AACv2"
	}
	return "AOT " + strconv.Itoa(c.ObjectType)
}
