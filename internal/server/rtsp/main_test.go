package rtsp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// scratch holds the clips tests make once per process.
var scratch string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshcast-rtsp-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// clips are the FLV files made so far, by name.
var clips struct {
	sync.Mutex
	m map[string][]media.Packet
}

// makeClip returns the packets of a short FLV clip ffmpeg makes once per
// process from args (the encoding options), e.g. 320x240 H.264 and AAC.
func makeClip(t *testing.T, name string, args ...string) []media.Packet {
	t.Helper()
	testutil.Need(t, "ffmpeg")
	clips.Lock()
	defer clips.Unlock()
	if p, ok := clips.m[name]; ok {
		return p
	}
	path := filepath.Join(scratch, name+".flv")
	all := append([]string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4"}, args...)
	all = append(all, "-f", "flv", path)
	if out, err := exec.Command("ffmpeg", all...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := flv.NewReader(bytes.NewReader(data))
	if _, _, err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	var pkts []media.Packet
	for {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind == media.KindData {
			continue
		}
		p.Payload = bytes.Clone(p.Payload)
		pkts = append(pkts, p)
	}
	if clips.m == nil {
		clips.m = map[string][]media.Packet{}
	}
	clips.m[name] = pkts
	return pkts
}

// h264Clip is 4 s of 320x240 H.264 (a keyframe a second) and AAC.
func h264Clip(t *testing.T) []media.Packet {
	return makeClip(t, "h264", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k")
}

// feed publishes pkts into name on h at real time, looping, until the
// test ends.
func feed(t *testing.T, h *hub.Hub, name streamname.Name, pkts []media.Packet) {
	t.Helper()
	pub, err := h.Publish(name, stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		pub.Close()
	})
	go func() {
		defer close(done)
		start := time.Now()
		var offset int64
		last := pkts[len(pkts)-1].DTS + 40
		for loop := 0; ; loop++ {
			for i := range pkts {
				p := pkts[i]
				if loop > 0 && p.SeqHeader {
					continue
				}
				p.DTS += offset
				if d := time.Until(start.Add(time.Duration(p.DTS) * time.Millisecond)); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				if pub.WritePacket(&p) != nil {
					return
				}
			}
			offset += last
		}
	}()
}

// startServer starts a server on h, with UDP when udp is set; cfg's
// addresses are filled in.
func startServer(t *testing.T, h Hub, cfg Config, udp bool) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if udp {
		cfg.UDPRTPAddr, cfg.UDPRTCPAddr = udpPair(t)
	}
	s := New(cfg, h)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// udpPair finds an even UDP port whose next port is free too.
func udpPair(t *testing.T) (string, string) {
	t.Helper()
	for range 100 {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := a.LocalAddr().(*net.UDPAddr).Port
		a.Close()
		if port%2 != 0 || port > 65000 {
			continue
		}
		b, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port+1))
		if err != nil {
			continue
		}
		b.Close()
		return fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", port+1)
	}
	t.Fatal("no free pair of UDP ports")
	return "", ""
}

// probed is what ffprobe says of a stream.
type probed struct {
	Streams []struct {
		CodecName     string `json:"codec_name"`
		CodecType     string `json:"codec_type"`
		Width         int    `json:"width"`
		Height        int    `json:"height"`
		SampleRate    string `json:"sample_rate"`
		NbReadPackets string `json:"nb_read_packets"`
	} `json:"streams"`
}

// ffprobe reads url over transport for a few seconds and describes its
// streams, with the packets it read.
func ffprobe(t *testing.T, url, transport string) probed {
	t.Helper()
	testutil.Need(t, "ffprobe")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", transport,
		"-read_intervals", "%+3", "-count_packets",
		"-show_entries", "stream=codec_name,codec_type,width,height,sample_rate,nb_read_packets",
		"-of", "json", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe %s over %s: %v\n%s", url, transport, err, stderr.String())
	}
	var p probed
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	return p
}

// expectStreams checks that ffprobe saw video of codec at w x h and AAC,
// with packets of both.
func expectStreams(t *testing.T, p probed, codec string, w, h int) {
	t.Helper()
	var video, audio bool
	for _, s := range p.Streams {
		switch s.CodecType {
		case "video":
			video = s.CodecName == codec && s.Width == w && s.Height == h && s.NbReadPackets != "0"
		case "audio":
			audio = s.CodecName == "aac" && s.NbReadPackets != "0"
		}
	}
	if !video || !audio {
		t.Errorf("ffprobe saw %+v; want %s %dx%d and aac, with packets", p.Streams, codec, w, h)
	}
}

// rtspURL is the URL of name on s.
func rtspURL(s *Server, name string) string {
	return "rtsp://" + s.Addr().String() + "/" + name
}

// waitTracks waits until name on h has a video and an audio
// configuration.
func waitTracks(t *testing.T, h *hub.Hub, name streamname.Name) stream.Info {
	t.Helper()
	var in stream.Info
	testutil.WaitFor(t, 20*time.Second, "stream "+string(name)+"'s tracks", func() bool {
		st := h.Get(name)
		if st == nil {
			return false
		}
		in = st.Info()
		return in.Video != nil && in.Audio != nil
	})
	return in
}

// publishFFmpeg has ffmpeg publish a test pattern to url over RTSP TCP
// for secs seconds with the encoding args; it returns once ffmpeg exits
// (its error and stderr), or at once with wait false (stopped at the
// test's end).
func publishFFmpeg(t *testing.T, url string, secs int, wait bool, args ...string) (error, string) {
	return publishOver(t, url, "tcp", secs, wait, args...)
}

// publishOver is publishFFmpeg over transport.
func publishOver(t *testing.T, url, transport string, secs int, wait bool, args ...string) (error, string) {
	t.Helper()
	testutil.Need(t, "ffmpeg")
	all := []string{"-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(secs)}
	all = append(all, args...)
	all = append(all, "-f", "rtsp", "-rtsp_transport", transport, url)
	cmd := exec.Command("ffmpeg", all...)
	var stderr testutil.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if wait {
		select {
		case err := <-done:
			return err, stderr.String()
		case <-time.After(time.Duration(secs+30) * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("ffmpeg did not end: %s", stderr.String())
		}
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return nil, ""
}

// x264 are the encoding options of an H.264 and AAC publisher, with
// B-frames: DTS and PTS differ.
var x264 = []string{"-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"}

// contains reports whether s has sub, ignoring case.
func contains(s, sub string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(sub)) }
