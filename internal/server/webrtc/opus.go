package webrtc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/ffproc"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// What a WebRTC session says about its audio, in the answer's
// X-Meshcast-Audio header and the API's "audio".
const (
	// AudioOpus: a WHEP viewer hears the stream's AAC as Opus.
	AudioOpus = "opus (transcoded from AAC)"
	// AudioAAC: a WHIP publisher's Opus reaches the stream as AAC.
	AudioAAC = "aac (transcoded from Opus)"
	// NoAudio: WHEP viewers get video only, as transcoding is off.
	NoAudio = noAudioWHEP + whyOff
	// NoAudioStream: the stream has no audio to play.
	NoAudioStream = "none: the stream has no audio"
	// NoAudioOffer: the viewer or publisher offered no Opus audio.
	NoAudioOffer = "none: the offer has no Opus audio"

	noAudioWHEP = "none: the stream carries AAC, which WebRTC cannot play, and "
	noAudioWHIP = "none: the publisher's Opus is not taken, as streams carry AAC and "
	whyOff      = "transcoding it is off (--webrtc-opus=false)"
	waitingAAC  = "none yet: waiting for the stream's AAC"
)

// Audio transcoding defaults.
const (
	// opusQueue bounds the Opus packets queued for one WHEP session: 1 s.
	// A session that falls further behind loses packets; the transcoder
	// never waits for it.
	opusQueue = 50
	// opusClock is Opus's RTP clock rate (RFC 7587).
	opusClock = 48000
)

// transcoders runs the node's audio transcoding with ffmpeg: one process
// per stream with WHEP viewers (AAC to Opus, shared by the stream's
// viewers), one per WHIP publisher sending Opus (Opus to AAC), at most
// max at once. Close stops them all and waits.
type transcoders struct {
	ffmpeg  string // "" when transcoding is off
	max     int
	grace   time.Duration
	backoff time.Duration
	readers readers
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	n    int // running transcoders, of both directions
	opus map[streamname.Name]*opusTranscoder
}

// readers opens stream readers (the hub).
type readers interface {
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
}

func newTranscoders(cfg Config, rs readers, log *slog.Logger) *transcoders {
	m := &transcoders{max: cfg.MaxTranscoders, grace: cfg.TranscodeGrace, backoff: cfg.TranscodeBackoff,
		readers: rs, log: log, opus: map[streamname.Name]*opusTranscoder{}}
	if cfg.Opus {
		m.ffmpeg = cfg.FFmpeg
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m
}

// close stops every transcoder and waits for them.
func (m *transcoders) close() {
	m.cancel()
	m.wg.Wait()
}

// running counts the transcoders.
func (m *transcoders) running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// lookPath finds ffmpeg, or says why there is none.
func (m *transcoders) lookPath() (string, string) {
	if m.ffmpeg == "" {
		return "", whyOff
	}
	path, err := exec.LookPath(m.ffmpeg)
	if err != nil {
		return "", fmt.Sprintf("ffmpeg (%s), which would transcode it, was not found", m.ffmpeg)
	}
	return path, ""
}

// take counts one more transcoder, or says why not. Caller holds m.mu.
func (m *transcoders) take() string {
	switch {
	case m.ctx.Err() != nil:
		return "the server is closing"
	case m.n >= m.max:
		return fmt.Sprintf("this node transcodes as many audio tracks as it may (%d)", m.max)
	}
	m.n++
	m.wg.Add(1)
	return ""
}

// reserve counts a transcoder its caller will run, and finds ffmpeg for
// it; or says why there is none. release undoes it.
func (m *transcoders) reserve() (string, string) {
	path, why := m.lookPath()
	if why != "" {
		return "", why
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if why := m.take(); why != "" {
		return "", why
	}
	return path, ""
}

// release uncounts a transcoder that has ended.
func (m *transcoders) release() {
	m.mu.Lock()
	m.n--
	m.mu.Unlock()
	m.wg.Done()
}

// opusFrame is one Opus packet of a stream, at its place on the stream's
// timeline.
type opusFrame struct {
	pts  int64  // 90 kHz, the source's timeline
	data []byte // shared by every session: never modified
}

// maxOpusJitter is how far ffmpeg's timestamps may stray from the end of
// the packet before (its timestamp and duration) and still be taken as
// continuous: its resampler moves them by a fraction of a millisecond.
const maxOpusJitter = 40 * 90

// opusSub is one WHEP session's share of its stream's Opus: a queue the
// transcoder fills without waiting.
type opusSub struct {
	t     *opusTranscoder
	ch    chan opusFrame
	drops atomic.Int64
}

// opusTranscoder turns one stream's AAC into Opus for the stream's WHEP
// sessions. It runs while the stream has WHEP sessions and for a grace
// period after the last leaves.
type opusTranscoder struct {
	m    *transcoders
	name streamname.Name
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	subs    map[*opusSub]struct{}
	ending  bool        // takes no more sessions
	idle    *time.Timer // ends the transcoder after the grace period
	state   string      // what sessions say about their audio
	started time.Time   // of the current ffmpeg
	first   bool        // the current ffmpeg has produced a packet
}

// subscribe adds a WHEP session to the Opus of stream name, starting its
// transcoder if it has none; without one, it says why the session gets
// no audio.
func (m *transcoders) subscribe(name streamname.Name) (*opusSub, string) {
	path, why := m.lookPath()
	if why != "" {
		return nil, noAudioWHEP + why
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.opus[name]
	if t == nil {
		if why := m.take(); why != "" {
			return nil, noAudioWHEP + why
		}
		t = &opusTranscoder{m: m, name: name, log: m.log.With("stream", name), subs: map[*opusSub]struct{}{}, state: AudioOpus}
		t.ctx, t.cancel = context.WithCancel(m.ctx)
		m.opus[name] = t
		go t.run(path)
	}
	sub := &opusSub{t: t, ch: make(chan opusFrame, opusQueue)}
	t.mu.Lock()
	t.subs[sub] = struct{}{}
	if t.idle != nil {
		t.idle.Stop()
		t.idle = nil
	}
	t.mu.Unlock()
	return sub, ""
}

// unsubscribe removes a session; the last to leave starts the grace
// period after which the transcoder ends.
func (sub *opusSub) unsubscribe() {
	t := sub.t
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.subs, sub)
	if len(t.subs) == 0 && !t.ending && t.idle == nil {
		t.idle = time.AfterFunc(t.m.grace, t.endIfIdle)
	}
}

// audio is what the session says about its audio.
func (sub *opusSub) audio() string {
	sub.t.mu.Lock()
	defer sub.t.mu.Unlock()
	return sub.t.state
}

// endIfIdle ends the transcoder if it still has no sessions.
func (t *opusTranscoder) endIfIdle() {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.subs) > 0 || t.ending {
		return
	}
	t.log.Info("opus transcoding idle: stopping")
	t.endLocked()
}

// endLocked stops taking sessions and cancels the transcoder. Caller
// holds m.mu and t.mu.
func (t *opusTranscoder) endLocked() {
	t.ending = true
	if t.m.opus[t.name] == t {
		delete(t.m.opus, t.name)
	}
	if t.idle != nil {
		t.idle.Stop()
	}
	t.cancel()
}

// publish queues a packet for every session, dropping it for those whose
// queue is full.
func (t *opusTranscoder) publish(f opusFrame) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.first {
		t.first = true
		t.state = AudioOpus
		t.log.Info("opus transcoding running", "first_packet_after", time.Since(t.started).Round(time.Millisecond))
	}
	for sub := range t.subs {
		select {
		case sub.ch <- f:
		default:
			sub.drops.Add(1)
		}
	}
}

// setState records what sessions should say about their audio.
func (t *opusTranscoder) setState(s string) {
	t.mu.Lock()
	t.state = s
	t.mu.Unlock()
}

// run reads the stream and runs ffmpeg on its AAC until the transcoder
// is ended or the stream is.
func (t *opusTranscoder) run(ffmpeg string) {
	defer t.m.release()
	defer func() {
		t.m.mu.Lock()
		t.mu.Lock()
		t.endLocked()
		t.mu.Unlock()
		t.m.mu.Unlock()
	}()
	t.log.Info("opus transcoding started")
	var rd *stream.Reader
	defer func() {
		if rd != nil {
			rd.Close()
		}
	}()
	var aac *media.AACConfig
	var pending []*media.Packet
	err := supervise(t.ctx, t.log, ffproc.Backoff{First: t.m.backoff}, func() error {
		if rd == nil {
			var err error
			if rd, err = t.m.readers.NewReader(t.name, hub.TranscodeProtocol); err != nil {
				return fmt.Errorf("%w: %w", errDone, err)
			}
		}
		var err error
		if aac == nil {
			aac, pending, err = t.waitAAC(rd, pending)
		}
		if err == nil {
			err = t.runOnce(ffmpeg, rd, aac, &pending)
		}
		switch {
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: the stream ended", errDone)
		case errors.Is(err, errRestart):
			aac = nil // read again from pending
		case errors.Is(err, stream.ErrSlowReader):
			// Fell behind the stream: start again at its newest keyframe.
			rd.Close()
			rd, pending, aac = nil, nil, nil
			return errRestart
		case err != nil && t.ctx.Err() == nil:
			t.setState(AudioOpus + "; ffmpeg restarting after: " + brief(err.Error()))
		}
		return err
	})
	reason := "no more sessions"
	switch {
	case t.m.ctx.Err() != nil:
		reason = "server closing"
	case err != nil && !errors.Is(err, context.Canceled):
		reason = strings.TrimPrefix(err.Error(), errDone.Error()+": ")
	}
	t.log.Info("opus transcoding stopped", "reason", reason)
}

// waitAAC finds the stream's AAC configuration in pending, or else in
// what rd reads next; it returns the packets after it. Sessions say they
// wait for it while the stream sends frames without it.
func (t *opusTranscoder) waitAAC(rd *stream.Reader, pending []*media.Packet) (*media.AACConfig, []*media.Packet, error) {
	waiting := false
	for {
		for i, p := range pending {
			if p.SeqHeader && p.Codec == media.CodecAAC {
				if c, err := media.ParseAACConfig(p.Payload); err == nil {
					if waiting {
						t.setState(AudioOpus)
					}
					return c, pending[i+1:], nil
				}
			}
		}
		if len(pending) > 0 && !waiting {
			waiting = true
			t.setState(waitingAAC)
		}
		var err error
		if pending, err = rd.ReadPackets(t.ctx, pending[:0]); err != nil {
			return nil, nil, err
		}
	}
}

// runOnce runs one ffmpeg, feeding it the stream's AAC (first pending)
// until it fails, the transcoder ends or the stream's AAC configuration
// changes (errRestart, with *pending the packets after the change).
func (t *opusTranscoder) runOnce(ffmpeg string, rd *stream.Reader, aac *media.AACConfig, pending *[]*media.Packet) error {
	t.mu.Lock()
	t.started, t.first = time.Now(), false
	t.mu.Unlock()
	p, err := startPipe(t.ctx, ffmpeg, toOpusArgs, &tscodecs.MPEG4Audio{Config: aac.Config}, t.output)
	if err != nil {
		return err
	}
	pkts := *pending
	*pending = nil
	for {
		for i, pkt := range pkts {
			if pkt.Codec != media.CodecAAC {
				continue
			}
			if pkt.SeqHeader {
				if !bytes.Equal(pkt.Payload, aac.Raw) {
					*pending = pkts[i:] // read again by waitAAC
					p.close()
					return errRestart
				}
				continue
			}
			if err := p.batch(func() error { return p.w.WriteMPEG4Audio(p.track, tsBase+pkt.DTS*90, [][]byte{pkt.Payload}) }); err != nil {
				return p.failure(err)
			}
		}
		clear(pkts)
		if pkts, err = rd.ReadPackets(p.ctx, pkts[:0]); err != nil {
			if t.ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, stream.ErrSlowReader) {
				p.close()
				return err
			}
			return p.failure(nil)
		}
	}
}

// output takes the Opus of ffmpeg's output to the sessions.
func (t *opusTranscoder) output(r *mpegts.Reader) error {
	for _, tr := range r.Tracks() {
		if _, ok := tr.Codec.(*tscodecs.Opus); !ok {
			continue
		}
		var td mpegts.TimeDecoder
		var first, next int64
		started := false
		r.OnDataOpus(tr, func(pts int64, packets [][]byte) error {
			if !started {
				first, next, started = pts, pts, true
			}
			// Packets follow each other without gaps unless the source
			// has one: the RTP timestamps that sessions derive from these
			// then advance by the packets' durations, as decoders expect.
			pts = first + td.Decode(pts)
			if d := pts - next; d > -maxOpusJitter && d < maxOpusJitter {
				pts = next
			}
			for _, pkt := range packets {
				t.publish(opusFrame{pts: pts, data: bytes.Clone(pkt)})
				pts += opus.PacketDuration2(pkt) * 90000 / opusClock
			}
			next = pts
			return nil
		})
		return nil
	}
	return errors.New("ffmpeg's output has no Opus track")
}

// brief is the last lines of an error (ffmpeg's stderr and its exit
// status) on one line, for a session's status.
func brief(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	s = strings.Join(lines[max(len(lines)-3, 0):], "; ")
	if len(s) > 300 {
		s = "..." + strings.ToValidUTF8(s[len(s)-300:], "")
	}
	return s
}
