package mpegts

import (
	"fmt"
	"io"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/media"
)

// PacketSize is the size of an MPEG-TS packet; ChunkSize, seven of them,
// is what one SRT packet carries, the payload size SRT senders use.
const (
	PacketSize = 188
	ChunkSize  = 7 * PacketSize
)

// tsBase keeps MPEG-TS timestamps, and the clock reference a little
// before them, positive.
const tsBase = 90000

// Muxer writes a stream's packets to W as MPEG-TS, H.264 or HEVC and AAC,
// as SRT viewers and SRT push targets take it. It starts a program at the first
// keyframe (or the first audio frame of a stream without video), and a new
// one whenever a sequence header changes the decoder configuration.
// Packets MPEG-TS does not carry here (AV1, Opus, data) are skipped.
type Muxer struct {
	// W receives whole TS packets; a bufio.Writer of ChunkSize sends
	// whole SRT payloads.
	W io.Writer

	mw     *mpegts.Writer // nil until a program starts
	vt, at *mpegts.Track
	video  *media.VideoConfig // H.264 or HEVC
	aac    *media.AACConfig
}

// start begins a program with the known tracks.
func (m *Muxer) start() error {
	m.mw = &mpegts.Writer{W: m.W}
	m.vt, m.at = nil, nil
	if m.video != nil {
		m.vt = &mpegts.Track{Codec: &tscodecs.H264{}}
		if m.video.Codec == media.CodecH265 {
			m.vt.Codec = &tscodecs.H265{}
		}
		m.mw.Tracks = append(m.mw.Tracks, m.vt)
	}
	if m.aac != nil {
		m.at = &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: m.aac.Config}}
		m.mw.Tracks = append(m.mw.Tracks, m.at)
	}
	if err := m.mw.Initialize(); err != nil {
		m.mw = nil
		return fmt.Errorf("mpeg-ts: %w", err)
	}
	return nil
}

// WritePacket writes p, or takes its decoder configuration, or skips it.
func (m *Muxer) WritePacket(p *media.Packet) error {
	switch {
	case p.SeqHeader && (p.Codec == media.CodecH264 || p.Codec == media.CodecH265):
		if c, err := media.ParseVideoConfig(p.Codec, p.Payload); err == nil {
			m.video, m.mw = c, nil
		}
	case p.SeqHeader && p.Codec == media.CodecAAC:
		if c, err := media.ParseAACConfig(p.Payload); err == nil {
			m.aac, m.mw = c, nil
		}
	case p.Kind == media.KindVideo && m.video != nil && p.Codec == m.video.Codec:
		if m.mw == nil {
			if !p.Keyframe {
				return nil // a decoder starts at a keyframe
			}
			if err := m.start(); err != nil {
				return err
			}
		}
		nalus, err := media.AVCCToNALUs(p.Payload)
		if err != nil || len(nalus) == 0 {
			return nil
		}
		nalus = m.video.WithParamSets(nalus, p.Keyframe)
		pts, dts := tsBase+p.PTS()*90, tsBase+p.DTS*90
		if m.video.Codec == media.CodecH265 {
			err = m.mw.WriteH265(m.vt, pts, dts, nalus)
		} else {
			err = m.mw.WriteH264(m.vt, pts, dts, nalus)
		}
		if err != nil {
			return fmt.Errorf("mpeg-ts: %w", err)
		}
	case p.Kind == media.KindAudio && !p.SeqHeader && p.Codec == media.CodecAAC && m.aac != nil && (m.mw != nil || m.video == nil):
		if m.mw == nil {
			if err := m.start(); err != nil {
				return err
			}
		}
		if m.at == nil {
			return nil
		}
		if err := m.mw.WriteMPEG4Audio(m.at, tsBase+p.DTS*90, [][]byte{p.Payload}); err != nil {
			return fmt.Errorf("mpeg-ts: %w", err)
		}
	}
	return nil
}
