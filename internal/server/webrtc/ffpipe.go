package webrtc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/ffproc"
)

// Limits of an audio transcoding ffmpeg.
const (
	// pipeWriteTimeout fails an ffmpeg that takes no input this long.
	pipeWriteTimeout = 5 * time.Second
	// pipeDrain is how long ffmpeg has to exit once its input ends
	// before it is stopped (SIGTERM, then SIGKILL).
	pipeDrain = 500 * time.Millisecond
	// tsBase keeps the MPEG-TS timestamps given to ffmpeg, and the clock
	// reference a little before them, positive.
	tsBase = 90000
)

// pipeArgs has ffmpeg transcode the audio track of MPEG-TS on stdin to
// MPEG-TS on stdout with codec, one PES packet per audio packet, flushed
// at once, the input's timestamps kept (-copyts): the output stays on the
// source's timeline. Probing is minimal, for a quick start.
func pipeArgs(codec ...string) []string {
	args := []string{"-hide_banner", "-nostats", "-loglevel", "error",
		"-probesize", "32", "-analyzeduration", "0", "-copyts", "-f", "mpegts", "-i", "pipe:0",
		"-map", "0:a:0"}
	args = append(args, codec...)
	return append(args, "-f", "mpegts", "-pes_payload_size", "0", "-muxdelay", "0", "-muxpreload", "0",
		"-flush_packets", "1", "pipe:1")
}

// toOpusArgs turn AAC into the Opus WebRTC plays: 48 kHz stereo, 20 ms
// packets, low delay.
var toOpusArgs = pipeArgs("-c:a", "libopus", "-application", "lowdelay", "-frame_duration", "20",
	"-ar", "48000", "-ac", "2", "-b:a", "96k")

// toAACArgs turn a WebRTC publisher's Opus into AAC-LC.
var toAACArgs = pipeArgs("-c:a", "aac", "-ar", "48000", "-b:a", "128k")

// tsPipe is one ffmpeg transcoding an audio track: MPEG-TS in on its
// stdin, MPEG-TS out on its stdout, read by a goroutine of the pipe's.
type tsPipe struct {
	proc  *ffproc.Process
	in    *os.File // ffmpeg's stdin, the writing end
	bw    *bufio.Writer
	w     *mpegts.Writer
	track *mpegts.Track
	out   *os.File // ffmpeg's stdout, the reading end

	// ctx ends when ffmpeg's output does: ffmpeg exited, or failed.
	ctx    context.Context
	cancel context.CancelFunc
	read   chan struct{} // closed when the output reader returns
	rerr   error         // why it returned; read after read is closed

	closeOnce sync.Once
	exit      string // how ffmpeg ended, once closed
}

// startPipe starts ffmpeg with args, fed a track of codec in. output is
// called, from the pipe's goroutine, with the reader of ffmpeg's output
// once its program tables are read, to set the reader's callbacks; the
// goroutine then reads until ffmpeg's output ends, and ctx with it.
func startPipe(ctx context.Context, ffmpeg string, args []string, in tscodecs.Codec, output func(*mpegts.Reader) error) (*tsPipe, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	proc, err := ffproc.Start(ffmpeg, args, inR, outW)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	p := &tsPipe{proc: proc, in: inW, out: outR, read: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(ctx)
	p.bw = bufio.NewWriterSize(inW, 16<<10)
	p.track = &mpegts.Track{Codec: in}
	p.w = &mpegts.Writer{W: p.bw, Tracks: []*mpegts.Track{p.track}}
	if err := p.w.Initialize(); err != nil {
		p.cancel()
		close(p.read)
		p.close()
		return nil, err
	}
	go func() {
		defer close(p.read)
		defer p.cancel()
		p.rerr = readPipe(outR, output)
	}()
	return p, nil
}

// readPipe reads ffmpeg's output until it ends.
func readPipe(out *os.File, output func(*mpegts.Reader) error) error {
	r := &mpegts.Reader{R: bufio.NewReaderSize(out, 16<<10)}
	if err := r.Initialize(); err != nil {
		return fmt.Errorf("ffmpeg's output: %w", err)
	}
	r.OnDecodeError(func(error) {})
	if err := output(r); err != nil {
		return err
	}
	for {
		if err := r.Read(); err != nil {
			return err
		}
	}
}

// batch runs write, which writes to p.w, and sends what it wrote to
// ffmpeg, failing if ffmpeg takes none of it within pipeWriteTimeout.
func (p *tsPipe) batch(write func() error) error {
	p.in.SetWriteDeadline(time.Now().Add(pipeWriteTimeout))
	if err := write(); err != nil {
		return fmt.Errorf("ffmpeg's input: %w", err)
	}
	if err := p.bw.Flush(); err != nil {
		return fmt.Errorf("ffmpeg's input: %w", err)
	}
	return nil
}

// close ends ffmpeg's input, lets it drain for pipeDrain, stops it if it
// is still running, waits for its output to be read, and says how it
// ended.
func (p *tsPipe) close() string {
	p.closeOnce.Do(func() {
		p.in.Close()
		t := time.NewTimer(pipeDrain)
		select {
		case <-p.proc.Done():
		case <-t.C:
			p.proc.Stop(ffproc.StopTimeout)
		}
		t.Stop()
		// ffmpeg is gone, so its output is at its end unless something
		// it started still holds it.
		p.out.SetReadDeadline(time.Now().Add(time.Second))
		<-p.read
		p.out.Close()
		p.cancel()
		p.exit = p.proc.Exit()
	})
	return p.exit
}

// failure closes a pipe that ended early and says why: err, what its
// user saw (nil: what the output's reader saw), and how ffmpeg ended
// (the tail of its stderr).
func (p *tsPipe) failure(err error) error {
	exit := p.close()
	if err == nil {
		err = p.rerr
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return errors.New(exit)
	}
	return fmt.Errorf("%w (%s)", err, exit)
}

// Control of supervise.
var (
	// errDone ends supervision: the source has ended.
	errDone = errors.New("done")
	// errRestart asks for a new run at once, without a backoff.
	errRestart = errors.New("restart")
)

// supervise calls once until ctx ends and again whenever it fails: at
// once after errRestart, else after a backoff (1s, doubling up to 30s,
// back to 1s after a stable run). A run returning nil or errDone ends
// it; it returns why it ended.
func supervise(ctx context.Context, log *slog.Logger, backoff ffproc.Backoff, once func() error) error {
	for {
		start := time.Now()
		err := once()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil || errors.Is(err, errDone) {
			return err
		}
		if errors.Is(err, errRestart) {
			continue
		}
		ran := time.Since(start)
		delay := backoff.Next(ran)
		log.Warn("audio transcoding failed; restarting", "err", err, "ran", ran.Round(time.Millisecond), "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
