package rtsp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/testutil"
)

// TestHEVCPublish: ffmpeg publishes HEVC and AAC over RTSP; the stream
// carries HEVC, which ffprobe reads back over RTSP.
func TestHEVCPublish(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{}, false)
	publishFFmpeg(t, rtspURL(s, "live/hevc"), 60, false,
		"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=25:log-level=error", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k")
	in := waitTracks(t, h, "live/hevc")
	if in.Video.Codec != "hevc" || in.Video.Width != 320 || in.Video.Height != 240 {
		t.Fatalf("stream: video %+v", in.Video)
	}
	expectStreams(t, ffprobe(t, rtspURL(s, "live/hevc"), "tcp"), "hevc", 320, 240)
}

// TestOpusPublish: a publisher's Opus reaches the stream as AAC, through
// ffmpeg, alongside its video.
func TestOpusPublish(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{FFmpeg: "ffmpeg"}, false)
	publishFFmpeg(t, rtspURL(s, "live/opus"), 60, false,
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-ar", "48000", "-b:a", "64k")
	in := waitTracks(t, h, "live/opus")
	if in.Audio.Codec != "aac" || in.Audio.SampleRate != 48000 {
		t.Fatalf("stream: audio %+v", in.Audio)
	}
	rd, err := h.NewReader("live/opus", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	checkFrames(t, readFor(t, rd, 50), media.CodecH264)
}

// TestOpusRefused: without ffmpeg, an Opus-only publisher is refused with
// the reason.
func TestOpusRefused(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	h := hub.New(hub.Config{})
	defer h.Close()
	s := startServer(t, h, Config{}, false)
	err, stderr := publishFFmpeg(t, rtspURL(s, "live/opusonly"), 2, true, "-map", "1:a", "-c:a", "libopus")
	if err == nil || !contains(stderr, "415") || !contains(stderr, "opus") {
		t.Fatalf("ffmpeg: %v, want 415 naming opus:\n%s", err, stderr)
	}
}

// TestAV1 plays AV1 (from an IVF file ffmpeg makes) published into the
// hub over RTSP, read by the package's client: the copy has AV1's
// configuration, a keyframe and frames of the right size.
func TestAV1(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	path := filepath.Join(t.TempDir(), "av1.ivf")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-t", "3", "-c:v", "libsvtav1", "-preset", "12", "-g", "25", "-pix_fmt", "yuv420p", "-f", "ivf", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("ffmpeg cannot make AV1 here: %v\n%s", err, out)
	}
	pkts, err := readIVF(path)
	if err != nil {
		t.Fatal(err)
	}
	src := hub.New(hub.Config{})
	defer src.Close()
	feed(t, src, "live/av1", pkts)
	s := startServer(t, src, Config{}, false)

	dst := hub.New(hub.Config{})
	defer dst.Close()
	pub, err := dst.Publish("relay/av1", stream.PublisherInfo{Protocol: "rtsp-pull"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	rd, err := dst.NewReader("relay/av1", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Pull(ctx, rtspURL(s, "live/av1"), "tcp", pub) }()
	got := readFor(t, rd, 30)
	cancel()
	<-done
	var cfg *media.VideoConfig
	frames := 0
	for _, p := range got {
		switch {
		case p.SeqHeader:
			if cfg, err = media.ParseVideoConfig(p.Codec, p.Payload); err != nil || p.Codec != media.CodecAV1 {
				t.Fatalf("configuration: %s %v", p.Codec, err)
			}
		case p.Kind == media.KindVideo:
			if cfg == nil || (frames == 0 && !p.Keyframe) {
				t.Fatal("a frame before the configuration or a keyframe")
			}
			if _, err := media.SplitOBUs(p.Payload); err != nil {
				t.Fatalf("frame %d: %v", frames, err)
			}
			frames++
		}
	}
	info, err := cfg.Info()
	if err != nil || info.Width != 320 || info.Height != 240 {
		t.Errorf("AV1 %+v %v, want 320x240", info, err)
	}
}

// readIVF reads the AV1 of an IVF file as packets: the configuration
// from the first sequence header, then every temporal unit.
func readIVF(path string) ([]media.Packet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 32 || string(b[:4]) != "DKIF" || string(b[8:12]) != "AV01" {
		return nil, errors.New("not an AV1 IVF file")
	}
	rate, scale := int64(binary.LittleEndian.Uint32(b[16:])), int64(binary.LittleEndian.Uint32(b[20:]))
	var out []media.Packet
	for pos := int(binary.LittleEndian.Uint16(b[6:])); pos+12 <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[pos:]))
		pts := int64(binary.LittleEndian.Uint64(b[pos+4:]))
		tu := b[pos+12 : pos+12+n]
		pos += 12 + n
		obus, err := media.SplitOBUs(tu)
		if err != nil {
			return nil, err
		}
		key := false
		for _, o := range obus {
			if o[0]>>3&0x0f == 1 { // a sequence header starts every keyframe
				key = true
				if len(out) == 0 {
					cfg := (&media.AV1Config{SequenceHeader: o}).Marshal()
					out = append(out, media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, SeqHeader: true, Payload: cfg})
				}
			}
		}
		out = append(out, media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, DTS: pts * 1000 * scale / rate, Keyframe: key, Payload: tu})
	}
	return out, nil
}

// TestRTSPS: over RTSPS, ffprobe plays a stream and the client pulls it,
// verifying the node's certificate.
func TestRTSPS(t *testing.T) {
	testutil.Need(t, "ffmpeg", "ffprobe")
	cert := testutil.NewCert(t, "localhost", 2, nil)
	pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Config{})
	defer h.Close()
	feed(t, h, "live/tls", h264Clip(t))
	s := startServer(t, h, Config{RTSPSAddr: "127.0.0.1:0", TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}}, false)
	url := "rtsps://" + s.TLSAddr().String() + "/live/tls"
	expectStreams(t, ffprobe(t, url, "tcp"), "h264", 320, 240)

	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	dst := hub.New(hub.Config{})
	defer dst.Close()
	pub, err := dst.Publish("relay/tls", stream.PublisherInfo{Protocol: "rtsp-pull"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	rd, err := dst.NewReader("relay/tls", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c := &Client{TLSConfig: &tls.Config{RootCAs: roots}, Timeout: 5 * time.Second}
	go func() { done <- c.Pull(ctx, url, pub) }()
	checkFrames(t, readFor(t, rd, 30), media.CodecH264)
	cancel()
	<-done
}
