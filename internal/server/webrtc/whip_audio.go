package webrtc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/ffproc"
	"github.com/meshcast/meshcast/internal/media"
)

// whipClock is when a WebRTC publisher's first packet arrived: the zero
// of its stream's timeline.
type whipClock struct {
	once sync.Once
	t0   time.Time
}

// since is the time since the first packet; the first call is it.
func (c *whipClock) since() time.Duration {
	c.once.Do(func() { c.t0 = time.Now() })
	return time.Since(c.t0)
}

// rtpTime places one track's RTP timestamps on its publisher's timeline:
// the track's first packet at its arrival, the rest by their RTP
// timestamps. The tracks of a publisher so line up, to within their
// arrival jitter, without RTCP sender reports.
type rtpTime struct {
	rate    int64 // the track's RTP clock rate
	clock   *whipClock
	started bool
	last    uint32
	ticks   int64 // RTP ticks since the first packet, unwrapped
	base    int64 // the first packet's place, in ms
}

// at returns the place of RTP timestamp ts in units per second.
func (t *rtpTime) at(ts uint32, unit int64) int64 {
	if !t.started {
		t.started, t.last, t.base = true, ts, t.clock.since().Milliseconds()
	}
	t.ticks += int64(int32(ts - t.last))
	t.last = ts
	return t.base*unit/1000 + t.ticks*unit/t.rate
}

// ingestOpus transcodes a WHIP publisher's Opus to AAC with ffmpeg and
// writes it to pub until ctx ends or the track does, restarting ffmpeg
// when it fails. audio is what the session says about its audio.
func (s *Server) ingestOpus(ctx context.Context, tr *webrtc.TrackRemote, pub Publisher, clock *whipClock,
	ffmpeg string, audio *atomic.Pointer[string], log *slog.Logger) {
	rt := rtpTime{rate: int64(tr.Codec().ClockRate), clock: clock}
	out := &aacOut{pub: pub, audio: audio, log: log}
	last := int64(-1)
	log.Info("aac transcoding started")
	failed := func(err error) error {
		audio.Store(ptr(AudioAAC + "; ffmpeg restarting after: " + brief(err.Error())))
		return err
	}
	supervise(ctx, log, ffproc.Backoff{First: s.cfg.TranscodeBackoff}, func() error {
		out.started = time.Now()
		p, err := startPipe(ctx, ffmpeg, toAACArgs, &tscodecs.Opus{ChannelCount: 2}, out.output)
		if err != nil {
			return failed(err)
		}
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				p.close()
				return fmt.Errorf("%w: %w", errDone, err) // the publisher left
			}
			if p.ctx.Err() != nil {
				return failed(p.failure(nil))
			}
			pts := rt.at(pkt.Timestamp, 90000)
			if len(pkt.Payload) == 0 || pts <= last {
				continue // late or repeated: ffmpeg takes time forward only
			}
			last = pts
			if err := p.batch(func() error { return p.w.WriteOpus(p.track, tsBase+pts, [][]byte{pkt.Payload}) }); err != nil {
				return failed(p.failure(err))
			}
		}
	})
	log.Info("aac transcoding stopped")
}

// aacOut writes the AAC of ffmpeg's output to a publisher's stream: its
// configuration first, then its frames on the publisher's timeline.
type aacOut struct {
	pub     Publisher
	audio   *atomic.Pointer[string]
	log     *slog.Logger
	started time.Time // the current ffmpeg's start
	config  []byte    // the AudioSpecificConfig written last
}

// output is a pipe's output callback: it takes the AAC track.
func (o *aacOut) output(r *mpegts.Reader) error {
	for _, tr := range r.Tracks() {
		c, ok := tr.Codec.(*tscodecs.MPEG4Audio)
		if !ok {
			continue
		}
		raw, err := c.Config.Marshal()
		if err != nil {
			return fmt.Errorf("ffmpeg's AAC: %w", err)
		}
		cfg, err := media.ParseAACConfig(raw)
		if err != nil {
			return fmt.Errorf("ffmpeg's AAC: %w", err)
		}
		var td mpegts.TimeDecoder
		var first int64
		started := false
		r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
			if !started {
				first, started = pts, true
				o.audio.Store(ptr(AudioAAC))
				o.log.Info("aac transcoding running", "first_frame_after", time.Since(o.started).Round(time.Millisecond))
			}
			ms := max(first+td.Decode(pts)-tsBase, 0) / 90
			if !bytes.Equal(o.config, cfg.Raw) {
				o.config = cfg.Raw
				if err := o.pub.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: ms, SeqHeader: true, Payload: cfg.Raw}); err != nil {
					return err
				}
			}
			for i, au := range aus {
				dts := ms + int64(i)*1024*1000/int64(cfg.SampleRate)
				if err := o.pub.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, Payload: bytes.Clone(au)}); err != nil {
					return err
				}
			}
			return nil
		})
		return nil
	}
	return errors.New("ffmpeg's output has no AAC track")
}

func ptr[T any](v T) *T { return &v }
