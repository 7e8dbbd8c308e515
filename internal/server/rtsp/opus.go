package rtsp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/ffproc"
	"github.com/meshcast/meshcast/internal/media"
)

// Limits of an Opus publisher's transcoder.
const (
	// opusQueue bounds the Opus packets waiting for ffmpeg: 2 s of 20 ms
	// packets. When ffmpeg falls behind they are dropped: the RTP reader,
	// which a UDP listener shares among sessions, never waits.
	opusQueue = 100
	// pipeWriteTimeout fails an ffmpeg that takes no input this long.
	pipeWriteTimeout = 5 * time.Second
	// pipeDrain is how long ffmpeg has to exit once its input ends.
	pipeDrain = 500 * time.Millisecond
	// tsBase keeps the MPEG-TS timestamps given to ffmpeg positive.
	tsBase = 90000
)

// toAACArgs have ffmpeg turn the Opus of MPEG-TS on stdin into AAC-LC in
// MPEG-TS on stdout, one PES packet per frame, flushed at once, on the
// input's timeline (-copyts), with minimal probing: the arguments WHIP's
// transcoder uses.
var toAACArgs = []string{"-hide_banner", "-nostats", "-loglevel", "error",
	"-probesize", "32", "-analyzeduration", "0", "-copyts", "-f", "mpegts", "-i", "pipe:0",
	"-map", "0:a:0", "-c:a", "aac", "-ar", "48000", "-b:a", "128k",
	"-f", "mpegts", "-pes_payload_size", "0", "-muxdelay", "0", "-muxpreload", "0",
	"-flush_packets", "1", "pipe:1"}

// opusFrame is one Opus packet at its place on the publisher's timeline.
type opusFrame struct {
	ms   int64
	data []byte
}

// opusToAAC turns a publisher's Opus into the AAC streams carry, with an
// ffmpeg restarted after a backoff when it fails.
type opusToAAC struct {
	ffmpeg   string
	channels int
	write    func(*media.Packet) bool
	log      *slog.Logger
	in       chan opusFrame
	cancel   context.CancelFunc
	done     chan struct{}
	drops    atomic.Uint64
}

// startOpusToAAC starts transcoding until close or ctx's end.
func startOpusToAAC(ctx context.Context, ffmpeg string, channels int, write func(*media.Packet) bool, log *slog.Logger) *opusToAAC {
	t := &opusToAAC{ffmpeg: ffmpeg, channels: channels, write: write, log: log, in: make(chan opusFrame, opusQueue), done: make(chan struct{})}
	ctx, t.cancel = context.WithCancel(ctx)
	go t.run(ctx)
	return t
}

// push queues a frame, or drops it when the queue is full.
func (t *opusToAAC) push(f opusFrame) {
	select {
	case t.in <- f:
	default:
		t.drops.Add(1)
	}
}

// close stops the transcoder and waits for it.
func (t *opusToAAC) close() {
	t.cancel()
	<-t.done
}

func (t *opusToAAC) run(ctx context.Context) {
	defer close(t.done)
	var b ffproc.Backoff
	t.log.Info("opus to aac transcoding started")
	for {
		start := time.Now()
		err := t.once(ctx)
		if ctx.Err() != nil {
			t.log.Info("opus to aac transcoding stopped", "dropped", t.drops.Load())
			return
		}
		delay := b.Next(time.Since(start))
		t.log.Warn("opus to aac transcoding failed; restarting", "err", err, "in", delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// once runs one ffmpeg until ctx ends or it fails.
func (t *opusToAAC) once(ctx context.Context) error {
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	proc, err := ffproc.Start(t.ffmpeg, toAACArgs, inR, outW)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return err
	}
	outDone := make(chan error, 1)
	go func() { outDone <- t.output(outR) }()

	bw := bufio.NewWriterSize(inW, 16<<10)
	track := &mpegts.Track{Codec: &tscodecs.Opus{ChannelCount: t.channels}}
	w := &mpegts.Writer{W: bw, Tracks: []*mpegts.Track{track}}
	err = w.Initialize()
	last := int64(-1)
	var outErr error
	outEnded := false
feed:
	for err == nil {
		select {
		case <-ctx.Done():
			break feed
		case outErr = <-outDone:
			outEnded = true
			err = errors.New("ffmpeg's output ended")
		case f := <-t.in:
			pts := tsBase + f.ms*90
			if pts <= last {
				continue // ffmpeg takes time forward only
			}
			last = pts
			inW.SetWriteDeadline(time.Now().Add(pipeWriteTimeout))
			if err = w.WriteOpus(track, pts, [][]byte{f.data}); err == nil {
				err = bw.Flush()
			}
		}
	}
	inW.Close()
	timer := time.NewTimer(pipeDrain)
	select {
	case <-proc.Done():
	case <-timer.C:
		proc.Stop(ffproc.StopTimeout)
	}
	timer.Stop()
	if !outEnded {
		outR.SetReadDeadline(time.Now().Add(time.Second))
		outErr = <-outDone
	}
	outR.Close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if outErr != nil && err != nil {
		return fmt.Errorf("%w: %v (%s)", err, outErr, proc.Exit())
	}
	return fmt.Errorf("%w (%s)", err, proc.Exit())
}

// output reads ffmpeg's AAC and writes it: its configuration first, then
// its frames on the publisher's timeline.
func (t *opusToAAC) output(out *os.File) error {
	r := &mpegts.Reader{R: bufio.NewReaderSize(out, 16<<10)}
	if err := r.Initialize(); err != nil {
		return fmt.Errorf("ffmpeg's output: %w", err)
	}
	r.OnDecodeError(func(error) {})
	found := false
	for _, tr := range r.Tracks() {
		c, ok := tr.Codec.(*tscodecs.MPEG4Audio)
		if !ok || found {
			continue
		}
		cfg, err := aacConfig(&c.Config)
		if err != nil {
			return fmt.Errorf("ffmpeg's AAC: %w", err)
		}
		found = true
		var td mpegts.TimeDecoder
		var first int64
		started := false
		var config []byte
		r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
			if !started {
				first, started = pts, true
			}
			ms := max(first+td.Decode(pts)-tsBase, 0) / 90
			if !bytes.Equal(config, cfg.Raw) {
				config = cfg.Raw
				if !t.write(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: ms, SeqHeader: true, Payload: cfg.Raw}) {
					return errors.New("the stream refused the audio")
				}
			}
			for i, au := range aus {
				dts := ms + int64(i)*1024*1000/int64(cfg.SampleRate)
				if !t.write(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, Payload: bytes.Clone(au)}) {
					return errors.New("the stream refused the audio")
				}
			}
			return nil
		})
	}
	if !found {
		return errors.New("ffmpeg's output has no AAC track")
	}
	for {
		if err := r.Read(); err != nil {
			return err
		}
	}
}
