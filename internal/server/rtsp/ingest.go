package rtsp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/description"
	"github.com/bluenviron/gortsplib/v5/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/av1"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/meshcast/meshcast/internal/media"
)

// PacketWriter takes the packets of a stream (a *stream.Publisher). It
// takes ownership of each packet and its payload.
type PacketWriter interface {
	WritePacket(p *media.Packet) error
}

// ptsFunc is gortsplib's PacketPTS: an RTP packet's presentation time in
// its track's clock rate, on a timeline every track of the session
// shares; false until the track's first packet that starts a picture.
type ptsFunc func(*description.Media, *rtp.Packet) (int64, bool)

// plan is what an ingest takes of a publisher's tracks: the first H.264,
// HEVC or AV1 video track and the first AAC audio track (else Opus, when
// it can be transcoded).
type plan struct {
	video   *description.Media
	vForm   format.Format
	audio   *description.Media
	aForm   format.Format
	aConfig *media.AACConfig // the AAC's configuration; nil for Opus
	skipped []string         // tracks not taken, and why, for the log
}

// errNoTrack refuses a publisher without a track meshcast takes.
var errNoTrack = errors.New("no track meshcast takes: it takes H.264, HEVC or AV1 video and AAC audio (Opus is transcoded to AAC where ffmpeg is available)")

// planIngest chooses the tracks to take from desc; noOpus says why Opus
// cannot be transcoded ("": it can).
func planIngest(desc *description.Session, noOpus string) (*plan, error) {
	opus := noOpus == ""
	p := &plan{}
	var opusMedia *description.Media
	var opusForm format.Format
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			switch f := f.(type) {
			case *format.H264, *format.H265, *format.AV1:
				if p.video == nil {
					p.video, p.vForm = m, f
					continue
				}
			case *format.MPEG4Audio:
				if p.audio == nil {
					if cfg, err := aacConfig(f.Config); err == nil {
						p.audio, p.aForm, p.aConfig = m, f, cfg
						continue
					}
				}
			case *format.MPEG4AudioLATM:
				if p.audio == nil {
					if c := latmConfig(f); c != nil {
						if cfg, err := aacConfig(c); err == nil {
							p.audio, p.aForm, p.aConfig = m, f, cfg
							continue
						}
					}
				}
			case *format.Opus:
				if opusMedia == nil && opus {
					opusMedia, opusForm = m, f
					continue
				}
				if !opus {
					p.skipped = append(p.skipped, "opus ("+noOpus+")")
					continue
				}
			}
			p.skipped = append(p.skipped, strings.ToLower(f.Codec()))
		}
	}
	if p.audio == nil && opusMedia != nil {
		p.audio, p.aForm = opusMedia, opusForm
	} else if opusMedia != nil {
		p.skipped = append(p.skipped, "opus (AAC taken)")
	}
	if p.video == nil && p.audio == nil {
		if len(p.skipped) > 0 {
			return nil, fmt.Errorf("%w; offered: %s", errNoTrack, strings.Join(p.skipped, ", "))
		}
		return nil, errNoTrack
	}
	return p, nil
}

// opus reports whether the plan transcodes Opus.
func (p *plan) opus() bool {
	_, ok := p.aForm.(*format.Opus)
	return ok
}

// medias lists the tracks the plan takes.
func (p *plan) medias() []*description.Media {
	var out []*description.Media
	if p.video != nil {
		out = append(out, p.video)
	}
	if p.audio != nil && p.audio != p.video {
		out = append(out, p.audio)
	}
	return out
}

// String names the tracks taken, for logs.
func (p *plan) String() string {
	var out []string
	if p.vForm != nil {
		out = append(out, strings.ToLower(p.vForm.Codec()))
	}
	if p.aForm != nil {
		out = append(out, strings.ToLower(p.aForm.Codec()))
	}
	return strings.Join(out, ", ")
}

// aacConfig checks an AudioSpecificConfig the way every output reads it.
func aacConfig(c *mpeg4audio.AudioSpecificConfig) (*media.AACConfig, error) {
	if c == nil {
		return nil, errors.New("no AAC configuration")
	}
	raw, err := c.Marshal()
	if err != nil {
		return nil, err
	}
	return media.ParseAACConfig(raw)
}

// latmConfig is a LATM track's AudioSpecificConfig, when its SDP gives it
// for a single program and layer.
func latmConfig(f *format.MPEG4AudioLATM) *mpeg4audio.AudioSpecificConfig {
	c := f.StreamMuxConfig
	if c == nil || len(c.Programs) != 1 || len(c.Programs[0].Layers) != 1 {
		return nil
	}
	return c.Programs[0].Layers[0].AudioSpecificConfig
}

// ingest turns the RTP of a publisher's, or a pulled source's, tracks
// into packets, written to w: decoder configurations first and again when
// they change, frames from the first one a decoder can start at, DTS from
// the RTP times (and the pictures' order, for H.264 and HEVC), in
// milliseconds from the session's start.
//
// gortsplib calls a track's callback from one goroutine at a time, but
// different tracks' from different goroutines (a pulled UDP source): each
// track's state is its own.
type ingest struct {
	w      PacketWriter
	pts    ptsFunc
	log    *slog.Logger
	fail   func(error) // called once, when w refuses a packet
	failed atomic.Bool

	p     *plan
	video *videoIn
	audio *audioIn
	opus  *opusToAAC
}

// newIngest prepares the ingest of p's tracks. ffmpeg transcodes Opus.
func newIngest(p *plan, w PacketWriter, pts ptsFunc, ffmpeg string, log *slog.Logger, fail func(error)) (*ingest, error) {
	in := &ingest{w: w, pts: pts, log: log, fail: fail, p: p}
	if p.video != nil {
		v, err := newVideoIn(in, p.video, p.vForm)
		if err != nil {
			return nil, err
		}
		in.video = v
	}
	if p.audio != nil {
		a, err := newAudioIn(in, p.audio, p.aForm, p.aConfig, ffmpeg)
		if err != nil {
			return nil, err
		}
		in.audio = a
	}
	return in, nil
}

// attach sets the tracks' RTP callbacks with on (gortsplib's
// OnPacketRTP).
func (in *ingest) attach(on func(*description.Media, format.Format, gortsplib.OnPacketRTPFunc)) {
	if v := in.video; v != nil {
		on(v.medi, v.form, v.onRTP)
	}
	if a := in.audio; a != nil {
		on(a.medi, a.form, a.onRTP)
	}
}

// start writes the audio configuration the description gives, so that
// players get it ahead of the first picture, and starts the Opus
// transcoder.
func (in *ingest) start(ctx context.Context) error {
	a := in.audio
	if a == nil {
		return nil
	}
	if a.opus {
		in.opus = startOpusToAAC(ctx, a.ffmpeg, a.channels, in.write, in.log)
		return nil
	}
	if !in.write(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: a.config}) {
		return errors.New("the stream refused the audio configuration")
	}
	return nil
}

// close stops the Opus transcoder.
func (in *ingest) close() {
	if in.opus != nil {
		in.opus.close()
	}
}

// write hands p to the stream; false once the stream has refused one.
func (in *ingest) write(p *media.Packet) bool {
	if in.failed.Load() {
		return false
	}
	if err := in.w.WritePacket(p); err != nil {
		if in.failed.CompareAndSwap(false, true) {
			in.fail(err)
		}
		return false
	}
	return true
}

// toMS converts a time in clock units to milliseconds without overflow.
func toMS(v, clock int64) int64 {
	return v/clock*1000 + v%clock*1000/clock
}

// videoIn is an ingest's video track.
type videoIn struct {
	in    *ingest
	medi  *description.Media
	form  format.Format
	codec media.Codec
	clock int64

	decode func(*rtp.Packet) ([][]byte, error)
	dts    func(au [][]byte, pts int64) (int64, error) // nil: pictures are not reordered (AV1)
	params [][]byte                                    // the SDP's parameter sets
	primed bool                                        // a random access unit went to the DTS extractor

	z         media.NALUPacketizer
	out       []*media.Packet
	av1Config []byte // the av1C written last
	last      int64  // the last DTS written, ms
}

func newVideoIn(in *ingest, m *description.Media, f format.Format) (*videoIn, error) {
	v := &videoIn{in: in, medi: m, form: f, clock: int64(f.ClockRate())}
	switch f := f.(type) {
	case *format.H264:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		var x h264.DTSExtractor
		x.Initialize()
		v.codec, v.decode, v.dts = media.CodecH264, dec.Decode, x.Extract
		if sps, pps := f.SafeParams(); len(sps) >= 4 && len(pps) > 0 {
			v.params = [][]byte{sps, pps}
		}
	case *format.H265:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		var x h265.DTSExtractor
		x.Initialize()
		v.codec, v.decode, v.dts = media.CodecH265, dec.Decode, x.Extract
		v.z.HEVC = true
		if vps, sps, pps := f.SafeParams(); len(vps) > 0 && len(sps) > 0 && len(pps) > 0 {
			v.params = [][]byte{vps, sps, pps}
		}
	case *format.AV1:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		v.codec, v.decode = media.CodecAV1, dec.Decode
	default:
		return nil, fmt.Errorf("%s video is not taken", f.Codec())
	}
	if v.clock <= 0 {
		return nil, errors.New("video clock rate 0")
	}
	return v, nil
}

func (v *videoIn) onRTP(pkt *rtp.Packet) {
	// Every packet goes to the timestamp decoder: a track's timeline
	// starts at the first packet that starts a picture, which need not
	// be an access unit's last.
	pts, ok := v.in.pts(v.medi, pkt)
	au, err := v.decode(pkt)
	if err != nil || len(au) == 0 || !ok {
		return // more packets needed, a damaged access unit the decoder skips, or before the timeline
	}
	if v.codec == media.CodecAV1 {
		v.temporalUnit(au, pts)
		return
	}
	v.accessUnit(au, pts)
}

// accessUnit writes an H.264 or HEVC access unit.
func (v *videoIn) accessUnit(au [][]byte, pts int64) {
	if !v.primed {
		// The DTS extractor and the packetizer need the parameter sets
		// before the first picture; an encoder sending them out of band
		// has them in the SDP only.
		key := false
		if v.codec == media.CodecH265 {
			key = h265.IsRandomAccess(au)
		} else {
			key = h264.IsRandomAccess(au)
		}
		if !key {
			return
		}
		v.primed = true
		if v.params != nil && !v.hasParams(au) {
			au = append(append(make([][]byte, 0, len(v.params)+len(au)), v.params...), au...)
		}
	}
	dts, err := v.dts(au, pts)
	if err != nil {
		v.in.log.Debug("rtsp: access unit dropped", "err", err)
		return
	}
	d := max(toMS(dts, v.clock), v.last)
	p := max(toMS(pts, v.clock), d)
	v.last = d
	v.out = v.z.Packets(v.out[:0], d, p, au)
	for i, pkt := range v.out {
		v.out[i] = nil
		if !v.in.write(pkt) {
			return
		}
	}
}

// hasParams reports whether an access unit carries its SPS in band.
func (v *videoIn) hasParams(au [][]byte) bool {
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		if v.codec == media.CodecH265 {
			if h265.NALUType((n[0]>>1)&0x3f) == h265.NALUType_SPS_NUT {
				return true
			}
		} else if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
			return true
		}
	}
	return false
}

// temporalUnit writes an AV1 temporal unit, the configuration first
// whenever its sequence header changes.
func (v *videoIn) temporalUnit(tu [][]byte, pts int64) {
	for _, o := range tu {
		if len(o) == 0 || av1.OBUType((o[0]>>3)&0x0f) != av1.OBUTypeSequenceHeader {
			continue
		}
		cfg := (&media.AV1Config{SequenceHeader: bytes.Clone(o)}).Marshal()
		if bytes.Equal(cfg, v.av1Config) {
			continue
		}
		if _, err := media.ParseAV1Config(cfg); err != nil {
			continue
		}
		v.av1Config = cfg
		if !v.in.write(&media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, DTS: max(toMS(pts, v.clock), v.last), SeqHeader: true, Payload: cfg}) {
			return
		}
	}
	if v.av1Config == nil {
		return // nothing decodes before the sequence header
	}
	payload, err := av1.Bitstream(tu).Marshal()
	if err != nil {
		return
	}
	d := max(toMS(pts, v.clock), v.last)
	v.last = d
	v.in.write(&media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, DTS: d, Keyframe: av1.IsRandomAccess2(tu), Payload: payload})
}

// audioIn is an ingest's audio track: AAC (RFC 3640 or LATM), or Opus
// for the transcoder.
type audioIn struct {
	in     *ingest
	medi   *description.Media
	form   format.Format
	clock  int64
	config []byte // the AudioSpecificConfig; nil for Opus
	decode func(*rtp.Packet) ([][]byte, error)
	last   int64

	opus     bool
	ffmpeg   string
	channels int
}

func newAudioIn(in *ingest, m *description.Media, f format.Format, cfg *media.AACConfig, ffmpeg string) (*audioIn, error) {
	a := &audioIn{in: in, medi: m, form: f, clock: int64(f.ClockRate())}
	switch f := f.(type) {
	case *format.MPEG4Audio:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		a.decode, a.config = dec.Decode, cfg.Raw
	case *format.MPEG4AudioLATM:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		a.config = cfg.Raw
		a.decode = func(pkt *rtp.Packet) ([][]byte, error) {
			el, err := dec.Decode(pkt)
			if err != nil {
				return nil, err
			}
			ame := mpeg4audio.AudioMuxElement{MuxConfigPresent: f.CPresent, StreamMuxConfig: f.StreamMuxConfig}
			if err := ame.Unmarshal(el); err != nil {
				return nil, err
			}
			var aus [][]byte
			for _, sub := range ame.Payloads {
				if len(sub) > 0 && len(sub[0]) > 0 {
					aus = append(aus, sub[0][0])
				}
			}
			return aus, nil
		}
	case *format.Opus:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil, err
		}
		a.opus, a.ffmpeg, a.channels = true, ffmpeg, max(f.ChannelCount, 1)
		a.decode = func(pkt *rtp.Packet) ([][]byte, error) {
			frame, err := dec.Decode(pkt)
			if err != nil {
				return nil, err
			}
			return [][]byte{frame}, nil
		}
	default:
		return nil, fmt.Errorf("%s audio is not taken", f.Codec())
	}
	if a.clock <= 0 {
		return nil, errors.New("audio clock rate 0")
	}
	return a, nil
}

func (a *audioIn) onRTP(pkt *rtp.Packet) {
	pts, ok := a.in.pts(a.medi, pkt)
	aus, err := a.decode(pkt)
	if err != nil || len(aus) == 0 || !ok {
		return
	}
	if a.opus {
		if t := a.in.opus; t != nil {
			t.push(opusFrame{ms: max(toMS(pts, a.clock), 0), data: bytes.Clone(aus[0])})
		}
		return
	}
	for i, au := range aus {
		if len(au) == 0 {
			continue
		}
		d := max(toMS(pts+int64(i)*mpeg4audio.SamplesPerAccessUnit, a.clock), a.last)
		a.last = d
		if !a.in.write(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: d, Payload: bytes.Clone(au)}) {
			return
		}
	}
}
