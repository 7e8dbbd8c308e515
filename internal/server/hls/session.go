package hls

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"

	"github.com/meshcast/meshcast/internal/media"
)

// videoClockRate is the H.264 timestamp rate in MP4 and HLS.
const videoClockRate = 90000

// audioJitter is how far, in milliseconds, an audio timestamp may stray
// from the end of the previous frame and still be taken as contiguous. FLV
// timestamps are whole milliseconds, so frames of 1024 samples at 44.1 kHz
// arrive 23 or 24 ms apart.
const audioJitter = 2

// session is one gohlslib muxer with fixed tracks, fed by one goroutine
// and followed by another, the watcher (view.go).
type session struct {
	m     *muxer
	hm    *gohlslib.Muxer
	log   *slog.Logger
	video *videoTrack // nil for audio-only streams
	audio *audioTrack // nil for video-only streams

	// gohlslib's names of the tracks' streams, the leading one (the
	// video, or the audio of an audio-only stream) first: video1,
	// audio2; or audio1.
	streams    []string
	leading    string
	playlists  map[string]bool // the playlists gohlslib serves: true for media playlists
	lowLatency bool

	ctx      context.Context // ends when the session closes
	cancel   context.CancelFunc
	view     atomic.Pointer[view]
	frontier frontier
	files    fileCache
	wrote    chan struct{} // the feeder wrote a frame of the leading track
	watched  chan struct{} // closed when the watcher ends
	// renderFailures counts gohlslib's failures to render the watcher a
	// playlist; only the watcher uses it.
	renderFailures int

	based bool
	base  int64     // stream time (ms) of the session's first frame
	start time.Time // wall clock at base

	// Segment numbers and file names derived from the stream's timestamps
	// (numbering.go), the same on every node muxing the stream.
	seq numbering
	tag string

	writeErrs  int          // frames gohlslib refused
	encodeErrs atomic.Int64 // errors gohlslib reported on its own
}

type videoTrack struct {
	t       *gohlslib.Track
	cfg     *media.VideoConfig
	last    int64 // time of the previous AV1 frame, ms
	hasLast bool
}

type audioTrack struct {
	t            *gohlslib.Track
	rate         int64 // clock rate: the core AAC sample rate
	frameSamples int64 // samples per AAC frame
	next         int64 // timestamp right after the previous frame
	hasNext      bool
}

// startSession builds and starts a gohlslib muxer with the given tracks;
// at least one of video and audio is set.
func startSession(m *muxer, video *media.VideoConfig, audio *media.AACConfig, tag string) (*session, error) {
	sess := &session{m: m, log: m.log, tag: tag, lowLatency: m.s.cfg.LowLatency}
	sess.seq.minDur = segmentMin(m.s.cfg.SegmentDuration).Milliseconds()
	var tracks []*gohlslib.Track
	if video != nil {
		sess.video = newVideoTrack(video)
		tracks = append(tracks, sess.video.t)
		sess.streams = append(sess.streams, "video"+strconv.Itoa(len(tracks)))
	}
	if audio != nil {
		sess.audio = newAudioTrack(audio)
		tracks = append(tracks, sess.audio.t)
		sess.streams = append(sess.streams, "audio"+strconv.Itoa(len(tracks)))
	}
	sess.leading = sess.streams[0]
	sess.playlists = map[string]bool{"index.m3u8": false}
	for _, id := range sess.streams {
		sess.playlists[id+"_stream.m3u8"] = true
	}
	sess.hm = &gohlslib.Muxer{
		Tracks:             tracks,
		Variant:            m.s.cfg.variant(),
		PartMinDuration:    m.s.cfg.PartDuration,
		SegmentCount:       m.s.cfg.SegmentCount,
		SegmentMinDuration: segmentMin(m.s.cfg.SegmentDuration),
		OnEncodeError:      sess.onEncodeError,
	}
	if err := sess.hm.Start(); err != nil {
		return nil, fmt.Errorf("hls: start muxer: %w", err)
	}
	sess.ctx, sess.cancel = context.WithCancel(m.ctx)
	sess.view.Store(&view{next: make(chan struct{})})
	sess.wrote = make(chan struct{}, 1)
	sess.watched = make(chan struct{})
	go sess.watch()
	m.log.Info("muxer started", "video", describeVideo(video), "audio", describeAudio(audio))
	return sess, nil
}

// newVideoTrack makes the fMP4 track of a video configuration. An init
// segment carries one set of parameter sets; streams with more are
// vanishingly rare, and gohlslib supports only one of each.
func newVideoTrack(c *media.VideoConfig) *videoTrack {
	var codec codecs.Codec
	switch {
	case c.AVC != nil:
		codec = &codecs.H264{SPS: c.AVC.SPS[0], PPS: c.AVC.PPS[0]}
	case c.HEVC != nil:
		codec = &codecs.H265{VPS: c.HEVC.VPS[0], SPS: c.HEVC.SPS[0], PPS: c.HEVC.PPS[0]}
	default:
		codec = &codecs.AV1{SequenceHeader: c.AV1.SequenceHeader}
	}
	return &videoTrack{t: &gohlslib.Track{Codec: codec, ClockRate: videoClockRate}, cfg: c}
}

func newAudioTrack(c *media.AACConfig) *audioTrack {
	// gohlslib times MPEG-4 audio at the AudioSpecificConfig's own sample
	// rate, which for HE-AAC is the core rate, not c.SampleRate (the SBR
	// output rate). Track and timestamps must use the same one.
	rate := c.Config.SampleRate
	frame := int64(1024)
	if c.Config.FrameLengthFlag {
		frame = 960
	}
	return &audioTrack{
		t: &gohlslib.Track{
			Codec:     &codecs.MPEG4Audio{Config: c.Config},
			ClockRate: rate,
		},
		rate:         int64(rate),
		frameSamples: frame,
	}
}

// describeVideo summarises a video track for logs.
func describeVideo(c *media.VideoConfig) string {
	if c == nil {
		return "none"
	}
	return c.String()
}

// describeAudio summarises an audio track for logs.
func describeAudio(c *media.AACConfig) string {
	if c == nil {
		return "none"
	}
	return "aac " + c.Profile() + " " + strconv.Itoa(c.SampleRate) + "Hz " + strconv.Itoa(c.Channels) + "ch"
}

// onEncodeError receives errors gohlslib reports outside a write call. The
// first is logged; the rest are counted, to keep a bad stream from flooding
// the log.
func (sess *session) onEncodeError(err error) {
	if sess.encodeErrs.Add(1) == 1 {
		sess.log.Warn("muxer encode error", "err", err)
	}
}

// close closes the gohlslib muxer, which also ends the watcher's request
// waiting in it, and waits for the watcher, whose last view tells waiting
// requests that the session ended.
func (sess *session) close(reason string) {
	sess.cancel()
	sess.hm.Close()
	<-sess.watched
	attrs := []any{"reason", reason}
	if sess.writeErrs > 0 {
		attrs = append(attrs, "dropped_frames", sess.writeErrs)
	}
	if n := sess.encodeErrs.Load(); n > 0 {
		attrs = append(attrs, "encode_errors", n)
	}
	sess.log.Info("muxer closed", attrs...)
}

// write feeds one frame. Frames of a track the session lacks are dropped,
// and so are frames gohlslib refuses: one bad frame must not end the stream.
func (sess *session) write(p *media.Packet) {
	if !sess.based {
		sess.based, sess.base, sess.start = true, p.DTS, time.Now()
	}
	var err error
	switch {
	case p.Kind == media.KindVideo && sess.video != nil:
		if p.Keyframe {
			sess.seq.start(p.DTS)
		}
		err = sess.writeVideo(p)
		sess.nudge()
	case p.Kind == media.KindAudio && sess.audio != nil:
		if sess.video == nil {
			sess.seq.start(p.DTS)
		}
		err = sess.writeAudio(p)
		if sess.video == nil {
			sess.nudge()
		}
	default:
		return
	}
	if err != nil {
		sess.writeErrs++
		if sess.writeErrs == 1 {
			sess.log.Warn("dropping frame the muxer refused", "kind", p.Kind.String(), "err", err)
		}
	}
}

// ntp is the wall-clock time of stream time ms, for EXT-X-PROGRAM-DATE-TIME.
// It follows media time from the session's start rather than arrival time,
// since a new reader is first handed the cached GOP in one burst.
func (sess *session) ntp(ms int64) time.Time {
	return sess.start.Add(time.Duration(ms-sess.base) * time.Millisecond)
}

func (sess *session) writeVideo(p *media.Packet) error {
	v := sess.video
	units, err := media.SplitFrame(v.cfg.Codec, p.Payload)
	if err != nil {
		return fmt.Errorf("hls: video frame: %w", err)
	}
	// gohlslib starts segments at frames with in-band parameter sets and
	// derives H.264 and HEVC decode times from them, but FLV and RTMP
	// carry them only in the sequence header.
	units = v.cfg.WithParamSets(units, p.Keyframe)
	ms := p.PTS()
	if v.cfg.Codec == media.CodecAV1 {
		// AV1 is never reordered: its frames show at their decode time,
		// which gohlslib takes as given. A frame that does not advance it
		// is dropped, since gohlslib divides by segment durations.
		if ms = p.DTS; v.hasLast && ms <= v.last {
			return fmt.Errorf("hls: AV1 frame at %d ms after one at %d ms", ms, v.last)
		}
		v.last, v.hasLast = ms, true
	}
	// The stream's own timeline, not one from the session's start: the
	// segments' decode times are then the same on every node.
	pts := toClock(ms, videoClockRate)
	ntp := sess.ntp(ms)
	switch v.cfg.Codec {
	case media.CodecH265:
		err = sess.hm.WriteH265(v.t, ntp, pts, units)
	case media.CodecAV1:
		err = sess.hm.WriteAV1(v.t, ntp, pts, units)
	default:
		err = sess.hm.WriteH264(v.t, ntp, pts, units)
	}
	if err != nil {
		return fmt.Errorf("hls: write video: %w", err)
	}
	return nil
}

func (sess *session) writeAudio(p *media.Packet) error {
	a := sess.audio
	pts := a.smooth(toClock(p.PTS(), a.rate))
	if err := sess.hm.WriteMPEG4Audio(a.t, sess.ntp(p.PTS()), pts, [][]byte{p.Payload}); err != nil {
		return fmt.Errorf("hls: write audio: %w", err)
	}
	return nil
}

// smooth replaces a timestamp rounded to the millisecond with the exact
// end of the previous frame when they are within audioJitter, so every AAC
// frame lasts exactly its sample count. Larger differences are real gaps
// or overlaps and are kept.
func (a *audioTrack) smooth(pts int64) int64 {
	if a.hasNext {
		d := pts - a.next
		if d < 0 {
			d = -d
		}
		if d <= toClock(audioJitter, a.rate) {
			pts = a.next
		}
	}
	a.next, a.hasNext = pts+a.frameSamples, true
	return pts
}

// toClock converts milliseconds to ticks of a clock running at rate Hz,
// rounding toward zero. Whole seconds and the remainder are scaled apart so
// that no intermediate product can overflow.
func toClock(ms, rate int64) int64 {
	return ms/1000*rate + ms%1000*rate/1000
}
