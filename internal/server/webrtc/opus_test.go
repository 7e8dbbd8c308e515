package webrtc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// These tests run the transcoders with the real ffmpeg, on a real stream,
// and with a shell script standing for ffmpeg where it must fail.

// testStreams is the hub of a test: streams by name.
type testStreams struct{ testutil.Streams }

// add makes a stream and returns its publisher.
func (h *testStreams) add(t testing.TB, name streamname.Name) (*stream.Stream, *stream.Publisher) {
	t.Helper()
	s := stream.New(name, stream.Config{})
	pub, err := s.Attach(stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	h.Put(s)
	t.Cleanup(s.Close)
	return s, pub
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// aacFrames encodes seconds of a tone as AAC and returns its
// AudioSpecificConfig and raw frames.
func aacFrames(t *testing.T, seconds int) ([]byte, [][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tone.aac")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
		"-i", "sine=frequency=440:sample_rate=44100", "-t", fmt.Sprint(seconds), "-c:a", "aac", "-f", "adts", path).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pkts mpeg4audio.ADTSPackets
	if err := pkts.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	cfg := mpeg4audio.AudioSpecificConfig{Type: pkts[0].Type, SampleRate: pkts[0].SampleRate, ChannelConfig: pkts[0].ChannelConfig}
	asc, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var aus [][]byte
	for _, p := range pkts {
		aus = append(aus, p.AU)
	}
	return asc, aus
}

// publishAAC writes the frames to pub at twice real time, after the
// configuration, starting once the stream has a transcoder's reader.
func publishAAC(t *testing.T, s *stream.Stream, pub *stream.Publisher, asc []byte, aus [][]byte) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, "the transcoder's reader", func() bool { return s.Stats().ReaderCount[hub.TranscodeProtocol] > 0 })
	if err := pub.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: asc}); err != nil {
		t.Fatal(err)
	}
	for i, au := range aus {
		if err := pub.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: int64(i) * 1024 * 1000 / 44100, Payload: au}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(11 * time.Millisecond)
	}
}

// TestOpusFanOut: one ffmpeg turns a stream's AAC into Opus for two
// sessions; the one that reads gets every packet, 20 ms apart on the
// stream's timeline, while the one that never reads keeps a full queue
// and loses the rest, without holding up the transcoder. When both have
// left, the transcoder stops after its grace period.
func TestOpusFanOut(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	asc, aus := aacFrames(t, 3)
	h := &testStreams{}
	s, pub := h.add(t, "live/tone")
	m := newTranscoders(Config{Opus: true, FFmpeg: "ffmpeg", MaxTranscoders: 4, TranscodeGrace: 200 * time.Millisecond, TranscodeBackoff: time.Second}, h, quietLogger())
	defer m.close()

	reader, why := m.subscribe("live/tone")
	if reader == nil {
		t.Fatalf("subscribe: %s", why)
	}
	slow, _ := m.subscribe("live/tone")
	if m.running() != 1 {
		t.Fatalf("%d transcoders for one stream, want 1", m.running())
	}
	var got []opusFrame
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range reader.ch {
			got = append(got, f)
			if len(got) == 140 {
				return
			}
		}
	}()
	start := time.Now()
	publishAAC(t, s, pub, asc, aus)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the reading session got %d Opus packets of 140", len(got))
	}
	t.Logf("140 Opus packets %v after the first AAC frame; the slow session dropped %d", time.Since(start).Round(time.Millisecond), slow.drops.Load())
	for i := 1; i < len(got); i++ {
		if d := got[i].pts - got[i-1].pts; d != 1800 {
			t.Fatalf("packet %d is %d ticks after the one before, want 1800 (20 ms)", i, d)
		}
	}
	if first := got[0].pts - tsBase; first < -1800 || first > 1800 {
		t.Errorf("the first Opus packet is at %d (90 kHz), want the stream's start, 0", first)
	}
	if len(slow.ch) != opusQueue || slow.drops.Load() == 0 {
		t.Errorf("the slow session holds %d packets and dropped %d; want a full queue (%d) and drops", len(slow.ch), slow.drops.Load(), opusQueue)
	}
	if a := reader.audio(); a != AudioOpus {
		t.Errorf("audio %q, want %q", a, AudioOpus)
	}

	reader.unsubscribe()
	slow.unsubscribe()
	testutil.WaitFor(t, 5*time.Second, "the idle transcoder to stop", func() bool { return m.running() == 0 })
	if n := s.Stats().ReaderCount[hub.TranscodeProtocol]; n != 0 {
		t.Errorf("the stopped transcoder left %d readers", n)
	}
	// A new session starts a new transcoder.
	again, why := m.subscribe("live/tone")
	if again == nil {
		t.Fatalf("subscribe again: %s", why)
	}
	again.unsubscribe()
}

// fakeFFmpeg writes a shell script standing for ffmpeg.
func fakeFFmpeg(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ffmpeg")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpusTranscoderLifecycle: an ffmpeg that dies is started again after
// a backoff, and the sessions say so; Close stops a transcoder however it
// is doing, and waits for it; the count of transcoders is bounded; off or
// without ffmpeg, sessions say why they have no audio.
func TestOpusTranscoderLifecycle(t *testing.T) {
	asc, aus := []byte{0x12, 0x10}, [][]byte{{0x21, 0x00}} // 44.1 kHz stereo AAC-LC
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	// It reads a little and fails, leaving a line on stderr.
	crash := fakeFFmpeg(t, fmt.Sprintf("echo started >> %q\nhead -c 1 > /dev/null\necho 'Unknown encoder libopus' >&2\nexit 1", starts))
	h := &testStreams{}
	_, pub := h.add(t, "live/crash")
	h.add(t, "live/other")
	m := newTranscoders(Config{Opus: true, FFmpeg: crash, MaxTranscoders: 1, TranscodeGrace: time.Minute, TranscodeBackoff: 100 * time.Millisecond}, h, quietLogger())

	sub, why := m.subscribe("live/crash")
	if sub == nil {
		t.Fatalf("subscribe: %s", why)
	}
	// The stream's AAC, written a frame at a time so that each ffmpeg has
	// input to fail on.
	stop := make(chan struct{})
	writer := make(chan struct{})
	go func() {
		defer close(writer)
		pub.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: asc})
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			pub.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: i * 23, Payload: aus[0]})
		}
	}()
	defer func() { close(stop); <-writer }()
	testutil.WaitFor(t, 10*time.Second, "three ffmpeg starts", func() bool {
		b, _ := os.ReadFile(starts)
		return bytes.Count(b, []byte("started")) >= 3
	})
	if a := sub.audio(); !strings.Contains(a, "restarting") || !strings.Contains(a, "Unknown encoder libopus") {
		t.Errorf("audio %q, want it to say ffmpeg restarts, and why", a)
	}
	if _, why := m.subscribe("live/other"); !strings.Contains(why, "as many audio tracks as it may (1)") {
		t.Errorf("a second stream beyond the bound: %q", why)
	}
	closed := make(chan struct{})
	go func() { m.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if m.running() != 0 {
		t.Errorf("%d transcoders after Close", m.running())
	}

	off := newTranscoders(Config{Opus: false}, h, quietLogger())
	defer off.close()
	if sub, why := off.subscribe("live/crash"); sub != nil || why != NoAudio {
		t.Errorf("transcoding off: %q", why)
	}
	missing := newTranscoders(Config{Opus: true, FFmpeg: "no-such-ffmpeg", MaxTranscoders: 1}, h, quietLogger())
	defer missing.close()
	if sub, why := missing.subscribe("live/crash"); sub != nil || !strings.Contains(why, "no-such-ffmpeg") || !strings.Contains(why, "not found") {
		t.Errorf("ffmpeg missing: %q", why)
	}
}

// testPublisher collects what a transcoder writes to a stream.
type testPublisher struct {
	mu   sync.Mutex
	pkts []*media.Packet
}

func (p *testPublisher) WritePacket(pkt *media.Packet) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pkts = append(p.pkts, pkt)
	return nil
}

func (p *testPublisher) Close() {}

func (p *testPublisher) packets() []*media.Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*media.Packet(nil), p.pkts...)
}

// TestPipeOpusToAAC: a WHIP publisher's Opus goes through ffmpeg and
// reaches the stream as AAC: the configuration first, then frames 1024
// samples apart, on the Opus's timeline.
func TestPipeOpusToAAC(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	// Opus packets, as a WebRTC publisher sends them.
	path := filepath.Join(t.TempDir(), "tone.ts")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
		"-i", "sine=frequency=440:sample_rate=48000", "-t", "2", "-c:a", "libopus", "-ac", "2", "-f", "mpegts", path).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &mpegts.Reader{R: bufio.NewReader(f)}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var packets [][]byte
	r.OnDataOpus(r.Tracks()[0], func(_ int64, pkts [][]byte) error {
		packets = append(packets, pkts...)
		return nil
	})
	for r.Read() == nil {
	}
	if len(packets) < 90 {
		t.Fatalf("%d Opus packets in 2 s", len(packets))
	}

	pub := &testPublisher{}
	var audio atomic.Pointer[string]
	audio.Store(ptr("starting"))
	out := &aacOut{pub: pub, audio: &audio, log: quietLogger(), started: time.Now()}
	p, err := startPipe(t.Context(), "ffmpeg", toAACArgs, &tscodecs.Opus{ChannelCount: 2}, out.output)
	if err != nil {
		t.Fatal(err)
	}
	const start = 5000 // ms: where the publisher's audio starts on its timeline
	for i, pkt := range packets {
		if err := p.batch(func() error { return p.w.WriteOpus(p.track, tsBase+int64(start+i*20)*90, [][]byte{pkt}) }); err != nil {
			t.Fatal(err)
		}
	}
	if exit := p.close(); exit != "ffmpeg exited" {
		t.Errorf("ffmpeg ended: %s", exit)
	}
	got := pub.packets()
	if len(got) < 80 || !got[0].SeqHeader {
		t.Fatalf("%d packets, the first a configuration: %v", len(got), len(got) > 0 && got[0].SeqHeader)
	}
	cfg, err := media.ParseAACConfig(got[0].Payload)
	if err != nil || cfg.SampleRate != 48000 || cfg.Channels != 2 {
		t.Fatalf("AAC configuration %+v %v, want 48 kHz stereo", cfg, err)
	}
	if d := got[1].DTS - start; d < -50 || d > 50 {
		t.Errorf("the first AAC frame at %d ms, want about %d", got[1].DTS, start)
	}
	for i := 2; i < len(got); i++ {
		if d := got[i].DTS - got[i-1].DTS; got[i].SeqHeader || d < 20 || d > 22 {
			t.Fatalf("frame %d: %+v, %d ms after the one before; want 21 ms (1024 samples)", i, got[i], d)
		}
	}
	if a := *audio.Load(); a != AudioAAC {
		t.Errorf("audio %q, want %q", a, AudioAAC)
	}
}
