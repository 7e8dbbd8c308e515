// Package mpegts converts between MPEG-TS (ISO/IEC 13818-1), as SRT
// carries it, and meshcast's packets: H.264 or HEVC video and AAC audio.
// The transport stream itself is mediacommon's.
package mpegts

import (
	"errors"
	"fmt"
	"io"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/media"
)

// Writer takes the packets of a stream (stream.Publisher).
type Writer interface {
	WritePacket(p *media.Packet) error
}

// Demux reads MPEG-TS from r and writes its H.264 or HEVC and AAC tracks
// to w as packets, the decoder configurations first and again when they
// change, with times in milliseconds from 0. tables is called once the
// program tables are read. Other codecs are refused. It returns io.EOF
// when r ends, or w's error.
func Demux(r io.Reader, w Writer, tables func()) error {
	tr := &mpegts.Reader{R: r}
	if err := tr.Initialize(); err != nil {
		return fmt.Errorf("mpeg-ts: %w", err)
	}
	tables()
	d := &demuxer{w: w}
	d.td.Initialize()
	n := 0
	for _, t := range tr.Tracks() {
		switch c := t.Codec.(type) {
		case *tscodecs.H264:
			if d.video {
				continue
			}
			d.video = true
			n++
			tr.OnDataH264(t, d.frame)
		case *tscodecs.H265:
			if d.video {
				continue
			}
			d.video, d.videoz.HEVC = true, true
			n++
			tr.OnDataH265(t, d.frame)
		case *tscodecs.MPEG4Audio:
			if d.audio != nil {
				continue
			}
			b, err := c.Config.Marshal()
			if err != nil {
				return fmt.Errorf("mpeg-ts: AAC configuration: %w", err)
			}
			cfg, err := media.ParseAACConfig(b)
			if err != nil {
				return fmt.Errorf("mpeg-ts: %w", err)
			}
			d.audio = cfg
			n++
			tr.OnDataMPEG4Audio(t, d.aac)
		}
	}
	if n == 0 {
		return errors.New("mpeg-ts: no H.264, HEVC or AAC track: meshcast takes H.264 or HEVC video and AAC audio")
	}
	if d.audio != nil {
		// The audio configuration is in the program table: players get it
		// before the first picture, not as a change after it.
		d.audioOut = true
		if err := w.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: d.audio.Raw}); err != nil {
			return err
		}
	}
	tr.OnDecodeError(func(error) {}) // a damaged packet is skipped
	for {
		if err := tr.Read(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return io.EOF
			}
			return err
		}
	}
}

// demuxer turns one MPEG-TS program's access units into packets.
type demuxer struct {
	w     Writer
	td    mpegts.TimeDecoder
	based bool
	base  int64 // the first timestamp, 90 kHz: the stream starts at 0

	video    bool
	videoz   media.NALUPacketizer
	out      []*media.Packet
	audio    *media.AACConfig
	audioOut bool // its configuration was sent
}

// ms converts a 90 kHz MPEG-TS timestamp to the stream's milliseconds.
func (d *demuxer) ms(ts int64) int64 {
	ts = d.td.Decode(ts)
	if !d.based {
		d.base, d.based = ts, true
	}
	return max(ts-d.base, 0) / 90
}

func (d *demuxer) frame(pts, dts int64, au [][]byte) error {
	t := d.ms(dts)
	p := d.ms(pts)
	for _, pkt := range d.videoz.Packets(d.out[:0], t, p, au) {
		if err := d.w.WritePacket(pkt); err != nil {
			return err
		}
	}
	return nil
}

func (d *demuxer) aac(pts int64, aus [][]byte) error {
	t := d.ms(pts)
	if !d.audioOut {
		d.audioOut = true
		if err := d.w.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: t, SeqHeader: true, Payload: d.audio.Raw}); err != nil {
			return err
		}
	}
	rate := int64(d.audio.Config.SampleRate)
	if rate <= 0 {
		rate = 48000
	}
	for i, au := range aus {
		if len(au) == 0 {
			continue
		}
		if err := d.w.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: t + int64(i)*1024*1000/rate, Payload: au}); err != nil {
			return err
		}
	}
	return nil
}
