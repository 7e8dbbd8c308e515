package rtsp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// TestFFmpegPublish: ffmpeg publishes H.264 (with B-frames) and AAC over
// RTSP/TCP; the stream carries both, and ffprobe reads them back over
// RTSP TCP and UDP. A publisher over UDP publishes too.
func TestFFmpegPublish(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{}, true)
	publishFFmpeg(t, rtspURL(s, "live/x"), 60, false, x264...)
	in := waitTracks(t, h, "live/x")
	if in.Video.Codec != "h264" || in.Video.Width != 320 || in.Video.Height != 240 || in.Audio.Codec != "aac" || in.Audio.SampleRate != 48000 {
		t.Fatalf("stream: video %+v audio %+v", in.Video, in.Audio)
	}
	if in.Publisher.Protocol != Protocol {
		t.Errorf("publisher protocol %q", in.Publisher.Protocol)
	}
	for _, tr := range []string{"tcp", "udp"} {
		t.Run(tr, func(t *testing.T) {
			expectStreams(t, ffprobe(t, rtspURL(s, "live/x"), tr), "h264", 320, 240)
		})
	}
	t.Run("publish over udp", func(t *testing.T) {
		publishOver(t, rtspURL(s, "live/udp"), "udp", 60, false, x264...)
		in := waitTracks(t, h, "live/udp")
		if in.Video.Width != 320 || in.Audio.SampleRate != 48000 {
			t.Fatalf("stream: video %+v audio %+v", in.Video, in.Audio)
		}
		rd, err := h.NewReader("live/udp", "test")
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		checkFrames(t, readFor(t, rd, 30), media.CodecH264)
	})
}

// TestPublishedFrames: a publisher's frames reach the stream as a reader
// sees them: decoder configuration first, a keyframe, then frames whose
// DTS never step back and whose PTS is never before their DTS.
func TestPublishedFrames(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{}, false)
	publishFFmpeg(t, rtspURL(s, "live/frames"), 60, false, x264...)
	waitTracks(t, h, "live/frames")
	rd, err := h.NewReader("live/frames", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pkts []*media.Packet
	for ctx.Err() == nil && countVideo(pkts) < 60 {
		pkts, err = rd.ReadPackets(ctx, pkts)
		if err != nil {
			t.Fatal(err)
		}
	}
	var seq, key, reordered bool
	last := int64(-1)
	for _, p := range pkts {
		if p.Kind != media.KindVideo {
			continue
		}
		if p.SeqHeader {
			seq = true
			continue
		}
		if !seq {
			t.Fatal("a frame before the decoder configuration")
		}
		if !key && !p.Keyframe {
			t.Fatal("the first frame is not a keyframe")
		}
		key = true
		if p.DTS < last {
			t.Fatalf("DTS stepped back: %d after %d", p.DTS, last)
		}
		if p.CTS < 0 {
			t.Fatalf("PTS before DTS: CTS %d", p.CTS)
		}
		reordered = reordered || p.CTS > 0
		last = p.DTS
	}
	if !reordered {
		t.Error("no frame with PTS after DTS: B-frames were not reordered")
	}
}

func countVideo(pkts []*media.Packet) int {
	n := 0
	for _, p := range pkts {
		if p.Kind == media.KindVideo && !p.SeqHeader {
			n++
		}
	}
	return n
}

// TestPlayHubStream: a stream published into the hub (an FLV clip from
// ffmpeg) plays over RTSP in ffprobe, TCP and UDP; a stream that is not
// live is 404.
func TestPlayHubStream(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	h := hub.New(hub.Config{})
	defer h.Close()
	feed(t, h, "live/clip", h264Clip(t))
	s := startServer(t, h, Config{}, true)
	for _, tr := range []string{"tcp", "udp"} {
		t.Run(tr, func(t *testing.T) {
			expectStreams(t, ffprobe(t, rtspURL(s, "live/clip"), tr), "h264", 320, 240)
		})
	}
	t.Run("decode", func(t *testing.T) {
		// ffmpeg decodes 3 s over UDP, at 25 fps, without a warning.
		out, err := exec.Command("ffmpeg", "-hide_banner", "-nostats", "-loglevel", "warning", "-rtsp_transport", "udp",
			"-i", rtspURL(s, "live/clip"), "-t", "3", "-f", "null", "-").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("ffmpeg: %v\n%s", err, out)
		}
	})
	t.Run("not live", func(t *testing.T) {
		res := request(t, s, "DESCRIBE", "live/nothing", "")
		if !strings.HasPrefix(res, "RTSP/1.0 404") {
			t.Errorf("DESCRIBE of a stream not live: %q", firstLine(res))
		}
	})
}

// request sends one RTSP request to s and returns the answer's head.
func request(t *testing.T, s *Server, method, name, header string) string {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(method + " " + rtspURL(s, name) + " RTSP/1.0\r\nCSeq: 1\r\n" + header + "\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	return string(buf[:n])
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestPublishKey: with publish keys, a publisher without a key is
// refused (401, asking for a password), one with a wrong key too (403),
// and one with the key in the query or as its password publishes.
func TestPublishKey(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	a, err := auth.New(auth.Config{PublishAuth: auth.ModeAlways, PublishKeys: []string{"live=s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Config{})
	defer h.Close()
	var logs testutil.LockedBuffer
	s := startServer(t, h, Config{Auth: a, Logger: testLogger(&logs)}, false)
	host := s.Addr().String()
	short := []string{"-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"}
	for _, c := range []struct {
		name, url, want string
	}{
		{"no key", "rtsp://" + host + "/live/k1", "401"},
		{"wrong key", "rtsp://" + host + "/live/k2?key=nope", "403"},
		{"wrong password", "rtsp://user:nope@" + host + "/live/k3", "403"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err, stderr := publishFFmpeg(t, c.url, 2, true, short...)
			if err == nil || !strings.Contains(stderr, c.want) {
				t.Errorf("ffmpeg: %v, want refused with %s:\n%s", err, c.want, stderr)
			}
		})
	}
	for _, c := range []struct{ name, url string }{
		{"query", "rtsp://" + host + "/live/q?key=s3cret"},
		{"password", "rtsp://anyone:s3cret@" + host + "/live/p"},
	} {
		t.Run(c.name, func(t *testing.T) {
			publishFFmpeg(t, c.url, 30, false, short...)
			name := "live/" + c.url[strings.LastIndex(c.url, "/")+1:]
			name, _, _ = strings.Cut(name, "?")
			waitTracks(t, h, streamnameOf(name))
		})
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "nope") {
		t.Errorf("a key reached the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "publish refused") {
		t.Errorf("no refusal logged:\n%s", logs.String())
	}
}

// TestPlayAuth: a play refused by the Authorizer is refused with its
// status, before the stream is looked at.
func TestPlayAuth(t *testing.T) {
	a, err := auth.New(auth.Config{URLSecret: "x", SignedPlayApps: []string{"live"}})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{Auth: a}, false)
	if res := request(t, s, "DESCRIBE", "live/any", ""); !strings.HasPrefix(res, "RTSP/1.0 401") {
		t.Errorf("DESCRIBE without a signature: %q", firstLine(res))
	}
	if res := request(t, s, "DESCRIBE", "live/any?expires=9999999999&sig=00", ""); !strings.HasPrefix(res, "RTSP/1.0 403") {
		t.Errorf("DESCRIBE with a bad signature: %q", firstLine(res))
	}
}

// TestPull: the client pulls a stream from the package's own server, over
// TCP and UDP, into another hub: configurations, a keyframe and frames of
// both tracks arrive.
func TestPull(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	src := hub.New(hub.Config{})
	defer src.Close()
	feed(t, src, "live/src", h264Clip(t))
	s := startServer(t, src, Config{}, true)
	for _, tr := range []string{"tcp", "udp"} {
		t.Run(tr, func(t *testing.T) {
			dst := hub.New(hub.Config{})
			defer dst.Close()
			pub, err := dst.Publish("relay/copy", stream.PublisherInfo{Protocol: "rtsp-pull"})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			rd, err := dst.NewReader("relay/copy", "test")
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Pull(ctx, "rtsp://user:pw@"+s.Addr().String()+"/live/src", tr, pub) }()
			got := readFor(t, rd, 50)
			cancel()
			if err := <-done; err != context.Canceled {
				t.Errorf("Pull returned %v after its context ended", err)
			}
			checkFrames(t, got, media.CodecH264)
		})
	}
	t.Run("not live", func(t *testing.T) {
		err := Pull(context.Background(), "rtsp://admin:hunter22@"+s.Addr().String()+"/live/none?key=k3y", "tcp", discard{})
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("Pull of a stream not live: %v", err)
		}
		for _, secret := range []string{"admin", "hunter22", "k3y"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows %q: %v", secret, err)
			}
		}
	})
}

type discard struct{}

func (discard) WritePacket(*media.Packet) error { return nil }

// readFor reads rd until it has n video frames, within 20 s.
func readFor(t *testing.T, rd *stream.Reader, n int) []*media.Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var pkts []*media.Packet
	for countVideo(pkts) < n {
		var err error
		if pkts, err = rd.ReadPackets(ctx, pkts); err != nil {
			t.Fatalf("%d video frames, then: %v", countVideo(pkts), err)
		}
	}
	return pkts
}

// checkFrames checks a copy's packets: the video configuration of codec
// and the audio's first, a keyframe first, audio frames too.
func checkFrames(t *testing.T, pkts []*media.Packet, codec media.Codec) {
	t.Helper()
	var vcfg, acfg, key bool
	audio := 0
	for _, p := range pkts {
		switch {
		case p.SeqHeader && p.Kind == media.KindVideo:
			if p.Codec != codec {
				t.Fatalf("video configuration of %s, want %s", p.Codec, codec)
			}
			if _, err := media.ParseVideoConfig(p.Codec, p.Payload); err != nil {
				t.Fatal(err)
			}
			vcfg = true
		case p.SeqHeader && p.Codec == media.CodecAAC:
			acfg = true
		case p.Kind == media.KindVideo:
			if !vcfg || (!key && !p.Keyframe) {
				t.Fatalf("frame before the configuration or a keyframe")
			}
			key = true
			if _, err := media.SplitFrame(p.Codec, p.Payload); err != nil {
				t.Fatal(err)
			}
		case p.Kind == media.KindAudio:
			audio++
		}
	}
	if !acfg || audio == 0 {
		t.Errorf("audio: configuration %v, %d frames", acfg, audio)
	}
}

// TestSessionsPerIP: RTSP viewers count against the hub's sessions per
// address; past it a SETUP is refused.
func TestSessionsPerIP(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	h := hub.New(hub.Config{MaxSessionsPerIP: 1})
	defer h.Close()
	feed(t, h, "live/one", h264Clip(t))
	s := startServer(t, h, Config{}, false)
	first := dialPlay(t, s, "live/one")
	defer first.Close()
	if _, err := dialPlayErr(s, "live/one"); err == nil || !strings.Contains(err.Error(), "453") {
		t.Fatalf("a second viewer from one address: %v", err)
	}
	if got := h.SessionRefusals()[Protocol]; got != 1 {
		t.Errorf("%d refusals counted, want 1", got)
	}
}

// TestHandshakeTimeout: a connection that neither plays nor publishes is
// closed at HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{HandshakeTimeout: 300 * time.Millisecond}, false)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the server sent something")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
	if got := s.Refusals().HandshakeTimeout; got != 1 {
		t.Errorf("%d handshake timeouts counted", got)
	}
	testutil.WaitFor(t, 2*time.Second, "the connection's count", func() bool { return s.Connections() == 0 })
}

// TestMaxConnectionsPerIP: connections that wait are limited per
// address.
func TestMaxConnectionsPerIP(t *testing.T) {
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{MaxConnectionsPerIP: 1, HandshakeTimeout: 400 * time.Millisecond}, false)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testutil.WaitFor(t, 3*time.Second, "a refusal", func() bool { return s.Refusals().PerIP > 0 })
}

// testLogger logs to w, Debug and up.
func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func streamnameOf(s string) streamname.Name { return streamname.Name(s) }

// dialPlay plays name on s with a gortsplib client over TCP.
func dialPlay(t *testing.T, s *Server, name string) *gortsplib.Client {
	t.Helper()
	c, err := dialPlayErr(s, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dialPlayErr(s *Server, name string) (*gortsplib.Client, error) {
	u, err := base.ParseURL(rtspURL(s, name))
	if err != nil {
		return nil, err
	}
	tcp := gortsplib.ProtocolTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Protocol: &tcp}
	if err := c.Start(); err != nil {
		return nil, err
	}
	desc, _, err := c.Describe(u)
	if err == nil {
		err = c.SetupAll(desc.BaseURL, desc.Medias)
	}
	if err == nil {
		_, err = c.Play(nil)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
