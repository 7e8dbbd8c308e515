//go:build unix

package live

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// hevcClip is 30 s of 640x360 HEVC (x265, 25 fps, keyframes every 2 s,
// B-frames) and AAC in MPEG-TS.
func hevcClip(t *testing.T) string {
	return e2eutil.SharedFile(t, "hevc.ts",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "30", "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-x265-params", "log-level=error:keyint=50:min-keyint=50:bframes=2:scenecut=0",
		"-c:a", "aac", "-b:a", "64k", "-f", "mpegts")
}

// av1Clip is 30 s of 320x240 AV1 (SVT-AV1, 25 fps, keyframes every 2 s)
// in IVF.
func av1Clip(t *testing.T) string {
	return e2eutil.SharedFile(t, "av1.ivf",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-t", "30", "-c:v", "libsvtav1", "-preset", "12", "-g", "50", "-pix_fmt", "yuv420p",
		"-svtav1-params", "keyint=50", "-f", "ivf")
}

// enhancedPublisher is a Go enhanced RTMP publisher sending packets in
// real time.
type enhancedPublisher struct {
	c     *rtmp.Client
	start time.Time
	ctx   context.Context
}

// publishEnhanced connects an enhanced RTMP publisher to name on addr and
// sends it the packets source reads, paced by their timestamps, until the
// source ends, stop is called or the test ends.
func publishEnhanced(t *testing.T, addr, name string, source func(p *enhancedPublisher) error) (stop func()) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	app, key, _ := strings.Cut(name, "/")
	c, err := rtmp.NewClient(conn)
	if err == nil {
		c.FourCCs = []string{"hvc1", "av01"}
		err = c.Connect(app, fmt.Sprintf("rtmp://%s/%s", addr, app))
	}
	if err == nil && !slices.Contains(c.ServerFourCCs, "hvc1") {
		err = fmt.Errorf("the server's fourCcList %q lacks hvc1", c.ServerFourCCs)
	}
	if err == nil {
		err = c.Publish(key)
	}
	if err != nil {
		conn.Close()
		t.Fatalf("publish %s: %v", name, err)
	}
	conn.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Skim()
		for {
			// The server's acknowledgements and pings.
			if _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		err := source(&enhancedPublisher{c: c, start: time.Now(), ctx: ctx})
		if err != nil && ctx.Err() == nil {
			t.Errorf("publisher: %v", err)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			conn.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// send waits until p is due and writes it as an RTMP message.
func (e *enhancedPublisher) send(p *media.Packet) error {
	select {
	case <-time.After(time.Until(e.start.Add(time.Duration(p.DTS) * time.Millisecond))):
	case <-e.ctx.Done():
		return e.ctx.Err()
	}
	typ := rtmp.TypeVideo
	if p.Kind == media.KindAudio {
		typ = rtmp.TypeAudio
	}
	if err := e.c.WriteMedia(typ, uint32(p.DTS), flv.AppendBody(nil, p)); err != nil {
		return err
	}
	return e.c.Flush()
}

// readTS sends the HEVC and AAC of an MPEG-TS file: the decoder
// configurations, then every frame.
func readTS(path string) func(*enhancedPublisher) error {
	return func(e *enhancedPublisher) error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r := &mpegts.Reader{R: bufio.NewReader(f)}
		if err := r.Initialize(); err != nil {
			return err
		}
		base := int64(-1)
		ms := func(ts int64) int64 {
			if base < 0 {
				base = ts
			}
			return max(ts-base, 0) / 90
		}
		z := media.NALUPacketizer{HEVC: true}
		var aac []byte
		for _, tr := range r.Tracks() {
			switch c := tr.Codec.(type) {
			case *tscodecs.H265:
				r.OnDataH265(tr, func(pts, dts int64, au [][]byte) error {
					d := ms(dts)
					for _, p := range z.Packets(nil, d, d+(pts-dts)/90, au) {
						if err := e.send(p); err != nil {
							return err
						}
					}
					return nil
				})
			case *tscodecs.MPEG4Audio:
				if aac, err = c.Config.Marshal(); err != nil {
					return err
				}
				r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
					t := ms(pts)
					if aac != nil {
						if err := e.send(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: t, SeqHeader: true, Payload: aac}); err != nil {
							return err
						}
						aac = nil
					}
					for i, au := range aus {
						if err := e.send(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: t + int64(i)*1024*1000/48000, Payload: au}); err != nil {
							return err
						}
					}
					return nil
				})
			}
		}
		for {
			if err := r.Read(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
}

// readIVF sends the AV1 of an IVF file: the configuration made from the
// first sequence header, then every temporal unit.
func readIVF(path string) func(*enhancedPublisher) error {
	return func(e *enhancedPublisher) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if len(b) < 32 || string(b[:4]) != "DKIF" || string(b[8:12]) != "AV01" {
			return errors.New("not an AV1 IVF file")
		}
		rate, scale := int64(binary.LittleEndian.Uint32(b[16:])), int64(binary.LittleEndian.Uint32(b[20:]))
		configured := false
		for pos := int(binary.LittleEndian.Uint16(b[6:])); pos+12 <= len(b); {
			n := int(binary.LittleEndian.Uint32(b[pos:]))
			pts := int64(binary.LittleEndian.Uint64(b[pos+4:]))
			tu := b[pos+12 : pos+12+n]
			pos += 12 + n
			obus, err := media.SplitOBUs(tu)
			if err != nil {
				return err
			}
			key := false
			for _, o := range obus {
				if o[0]>>3&0x0f == 1 { // a sequence header starts every keyframe
					key = true
					if !configured {
						configured = true
						cfg := (&media.AV1Config{SequenceHeader: o}).Marshal()
						if err := e.send(&media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, SeqHeader: true, Payload: cfg}); err != nil {
							return err
						}
					}
				}
			}
			if err := e.send(&media.Packet{Kind: media.KindVideo, Codec: media.CodecAV1, DTS: pts * 1000 * scale / rate, Keyframe: key, Payload: tu}); err != nil {
				return err
			}
		}
		return nil
	}
}

// enhancedPlay reads name over RTMP as an enhanced RTMP client, or over
// HTTP-FLV when flvURL is set, for d, and returns the video codec, its
// configuration and the frames and keyframes received.
func enhancedPlay(t *testing.T, addr, name, flvURL string, d time.Duration) (codec media.Codec, config []byte, frames, keys int) {
	t.Helper()
	deadline := time.Now().Add(d)
	take := func(p media.Packet) {
		if p.Kind != media.KindVideo {
			return
		}
		codec = p.Codec
		switch {
		case p.SeqHeader:
			config = bytes.Clone(p.Payload)
		case p.Keyframe:
			keys++
			fallthrough
		default:
			frames++
		}
	}
	if flvURL != "" {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", flvURL, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := flv.NewReader(resp.Body)
		if _, _, err := r.ReadHeader(); err != nil {
			t.Fatal(err)
		}
		for {
			p, err := r.ReadPacket()
			if err != nil {
				return
			}
			take(p)
		}
	}
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := e2eutil.StartPlaying(conn, addr, name, "hvc1", "av01")
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(deadline)
	for {
		m, err := c.ReadMessage()
		if err != nil {
			return
		}
		if m.Type == rtmp.TypeVideo {
			if p, err := flv.ParseVideo(m.Timestamp, m.Payload); err == nil {
				take(p)
			}
		}
	}
}

// expectVideo plays name for d with enhancedPlay and checks it got want's
// configuration of a w×h picture, a keyframe and at least minFrames frames.
func expectVideo(t *testing.T, what, addr, name, flvURL string, d time.Duration, want media.Codec, w, h, minFrames int) {
	t.Helper()
	codec, cfg, frames, keys := enhancedPlay(t, addr, name, flvURL, d)
	if codec != want || frames < minFrames || keys < 1 {
		t.Errorf("%s: codec %s, %d frames, %d keyframes; want %s, %d frames", what, codec, frames, keys, want, minFrames)
	}
	c, err := media.ParseVideoConfig(want, cfg)
	if err != nil {
		t.Errorf("%s: configuration: %v", what, err)
		return
	}
	if info, err := c.Info(); err != nil || info.Width != w || info.Height != h {
		t.Errorf("%s: picture %+v %v, want %dx%d", what, info, err, w, h)
	}
}

// TestEnhancedRTMPHEVC: a Go enhanced RTMP publisher sends HEVC and AAC;
// ffprobe reads HEVC back over fMP4 HLS and MPEG-TS over SRT; Go enhanced
// RTMP and HTTP-FLV clients get the HEVC configuration and frames; the API
// describes the picture.
func TestEnhancedRTMPHEVC(t *testing.T) {
	clip := hevcClip(t)
	n := e2eutil.StartNode(t, nil)
	addr := fmt.Sprintf("127.0.0.1:%d", n.RTMPPort)
	const name = "live/hevc"
	publishEnhanced(t, addr, name, readTS(clip))
	waitVideo(t, n, "live/hevc")
	var info struct {
		Video struct {
			Codec   string
			Width   int
			Profile string
		}
	}
	if code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/"+name); code != 200 || json.Unmarshal(body, &info) != nil ||
		info.Video.Codec != "hevc" || info.Video.Width != 640 || info.Video.Profile != "Main" {
		t.Errorf("stream API: %d %s", code, body)
	}

	expectVideo(t, "RTMP", addr, name, "", 4*time.Second, media.CodecH265, 640, 360, 50)
	expectVideo(t, "HTTP-FLV", addr, name, n.HTTPURL+"/"+name+".flv", 4*time.Second, media.CodecH265, 640, 360, 50)

	// ffprobe cannot read HEVC in FLV before ffmpeg 6.1, but reads it in
	// fMP4 HLS and MPEG-TS.
	if c, w, h, err := e2eutil.ProbeVideo(n.HTTPURL + "/" + name + "/index.m3u8"); err != nil || c != "hevc" || w != 640 || h != 360 {
		t.Errorf("HLS: %s %dx%d %v, want hevc 640x360", c, w, h, err)
	}
	read := fmt.Sprintf("srt://127.0.0.1:%d?streamid=read:%s", n.SRTAddr().(*net.UDPAddr).Port, name)
	if c, w, h, err := e2eutil.ProbeVideo(read); err != nil || c != "hevc" || w != 640 || h != 360 {
		t.Errorf("SRT: %s %dx%d %v, want hevc 640x360", c, w, h, err)
	}
	// WebRTC playback takes H.264, and says so.
	resp, err := http.Post(n.HTTPURL+"/"+name+"/whep", "application/sdp", strings.NewReader("v=0\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(body), "hevc") {
		t.Errorf("WHEP of HEVC: %d %s", resp.StatusCode, body)
	}
}

// TestSRTPublishHEVC: ffmpeg publishes HEVC in MPEG-TS over SRT; ffprobe
// reads HEVC back over HLS and an enhanced RTMP client gets its frames.
func TestSRTPublishHEVC(t *testing.T) {
	clip := hevcClip(t)
	n := e2eutil.StartNode(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-i", clip, "-c", "copy", "-f", "mpegts",
		fmt.Sprintf("srt://127.0.0.1:%d?streamid=publish:live/srthevc", n.SRTAddr().(*net.UDPAddr).Port))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	waitVideo(t, n, "live/srthevc")
	if c, w, h, err := e2eutil.ProbeVideo(n.HTTPURL + "/live/srthevc/index.m3u8"); err != nil || c != "hevc" || w != 640 || h != 360 {
		t.Errorf("HLS: %s %dx%d %v, want hevc 640x360", c, w, h, err)
	}
	expectVideo(t, "RTMP", fmt.Sprintf("127.0.0.1:%d", n.RTMPPort), "live/srthevc", "", 3*time.Second, media.CodecH265, 640, 360, 40)
}

// TestEnhancedRTMPAV1: a Go enhanced RTMP publisher sends AV1; ffprobe
// reads AV1 back over fMP4 HLS and a Go enhanced RTMP client gets its
// configuration and frames.
func TestEnhancedRTMPAV1(t *testing.T) {
	clip := av1Clip(t)
	n := e2eutil.StartNode(t, nil)
	addr := fmt.Sprintf("127.0.0.1:%d", n.RTMPPort)
	const name = "live/av1"
	publishEnhanced(t, addr, name, readIVF(clip))
	waitVideo(t, n, "live/av1")
	expectVideo(t, "RTMP", addr, name, "", 4*time.Second, media.CodecAV1, 320, 240, 50)
	if c, w, h, err := e2eutil.ProbeVideo(n.HTTPURL + "/" + name + "/index.m3u8"); err != nil || c != "av1" || w != 320 || h != 240 {
		t.Errorf("HLS: %s %dx%d %v, want av1 320x240", c, w, h, err)
	}
}

// TestRecordHEVC: an HEVC stream from an enhanced RTMP publisher is
// recorded as enhanced FLV, and the recording plays from the on-demand
// library as MP4 and HLS with ffprobe showing HEVC.
func TestRecordHEVC(t *testing.T) {
	clip := hevcClip(t)
	dir := t.TempDir()
	n := e2eutil.StartNode(t, func(c *config.Config) { c.Record, c.RecordDir = "all", dir })
	stop := publishEnhanced(t, fmt.Sprintf("127.0.0.1:%d", n.RTMPPort), "live/rechevc", readTS(clip))
	testutil.WaitFor(t, 15*time.Second, "the recording to start", func() bool {
		a := n.Recorder().Active()
		return len(a) == 1 && a[0].Bytes > 0
	})
	time.Sleep(6 * time.Second)
	stop()
	var name string
	testutil.WaitFor(t, 20*time.Second, "the recording in the library", func() bool {
		_, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/vod")
		var lib struct {
			Assets []struct {
				Name string `json:"name"`
			} `json:"assets"`
		}
		if json.Unmarshal(body, &lib) == nil && len(lib.Assets) == 1 {
			name = lib.Assets[0].Name
			return true
		}
		return false
	})
	for _, url := range []string{n.HTTPURL + "/vod/" + name + ".mp4", n.HTTPURL + "/vod/" + name + "/index.m3u8"} {
		if c, w, h, err := e2eutil.ProbeVideo(url); err != nil || c != "hevc" || w != 640 || h != 360 {
			t.Errorf("%s: %s %dx%d %v, want hevc 640x360", url, c, w, h, err)
		}
	}
	// The MP4 decodes: about 6 s of 25 fps frames.
	if f := e2eutil.DecodedFrames(t, n.HTTPURL+"/vod/"+name+".mp4"); f < 125 {
		t.Errorf("%d frames decoded from the MP4, want about 150", f)
	}
}

// TestEdgeHEVC: an HEVC stream published over enhanced RTMP on one node
// plays on another, which relays it: enhanced RTMP and fMP4 HLS with
// ffprobe showing HEVC.
func TestEdgeHEVC(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	clip := hevcClip(t)
	nodes := e2eutil.StartClusterNodes(t, nil, "hevc-origin", "hevc-edge")
	origin, edge := nodes[0], nodes[1]
	const name = "live/edgehevc"
	publishEnhanced(t, fmt.Sprintf("127.0.0.1:%d", origin.RTMPPort), name, readTS(clip))
	waitVideo(t, origin, name)
	if c, w, h, err := e2eutil.ProbeVideo(edge.HTTPURL + "/" + name + "/index.m3u8"); err != nil || c != "hevc" || w != 640 || h != 360 {
		t.Errorf("edge HLS: %s %dx%d %v, want hevc 640x360", c, w, h, err)
	}
	expectVideo(t, "edge RTMP", fmt.Sprintf("127.0.0.1:%d", edge.RTMPPort), name, "", 4*time.Second, media.CodecH265, 640, 360, 50)
	if s := edge.Hub.Get(name); s == nil || s.Info().Publisher.Protocol != "relay" {
		t.Error("the edge does not relay the stream")
	}
}

// waitVideo waits until name on n has a video configuration.
func waitVideo(t *testing.T, n *e2eutil.Node, name string) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, name+"'s video", func() bool {
		s := n.Hub.Get(streamname.Name(name))
		return s != nil && s.Info().Video != nil
	})
}
