//go:build unix

package webrtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	mcwebrtc "github.com/meshcast/meshcast/internal/server/webrtc"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// sendH264 writes the access units of an Annex B file to track at 30 fps,
// from the start again at its end, until ctx ends.
func sendH264(ctx context.Context, path string, track *webrtc.TrackLocalStaticSample) error {
	for ctx.Err() == nil {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		r, err := h264reader.NewReader(f)
		if err != nil {
			f.Close()
			return err
		}
		var au []byte
		tick := time.NewTicker(time.Second / 30)
		for ctx.Err() == nil {
			nal, err := r.NextNAL()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tick.Stop()
				f.Close()
				return err
			}
			au = append(append(au, 0, 0, 0, 1), nal.Data...)
			if t := nal.UnitType; t == h264reader.NalUnitTypeCodedSliceNonIdr || t == h264reader.NalUnitTypeCodedSliceIdr {
				if err := track.WriteSample(media.Sample{Data: au, Duration: time.Second / 30}); err != nil {
					tick.Stop()
					f.Close()
					return err
				}
				au = nil
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		}
		tick.Stop()
		f.Close()
	}
	return nil
}

// sendOpus writes the Opus packets of an Ogg file (one per page) to
// track in real time, from the start again at its end, until ctx ends.
func sendOpus(ctx context.Context, path string, track *webrtc.TrackLocalStaticSample) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		r, _, err := oggreader.NewWith(f)
		if err != nil {
			f.Close()
			return err
		}
		for ctx.Err() == nil {
			page, _, err := r.ParseNextPage()
			if err != nil {
				break // the end of the file
			}
			if strings.HasPrefix(string(page), "OpusTags") {
				continue
			}
			if err := track.WriteSample(media.Sample{Data: page, Duration: 20 * time.Millisecond}); err != nil {
				f.Close()
				return err
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		f.Close()
	}
	return nil
}

// liveCodecs is what ffprobe reads as the codecs of a live stream.
func liveCodecs(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", url).Output()
	return strings.Join(strings.Fields(string(out)), ","), err
}

// TestWHIP: a pion client publishes H.264 and Opus over WebRTC, signalled
// by WHIP; ffmpeg plays the stream back over RTMP and HTTP-FLV, with its
// video and its audio, transcoded to AAC.
func TestWHIP(t *testing.T) {
	n := e2eutil.StartNode(t, nil)
	dir := t.TempDir()
	clip, tone := filepath.Join(dir, "clip.h264"), filepath.Join(dir, "tone.ogg")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p",
		"-f", "h264", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	// Opus as browsers send it: 48 kHz, 20 ms packets, one per Ogg page.
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "6", "-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20", "-page_duration", "20000", "-f", "ogg", tone).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	pc := e2eutil.LoopbackPeer(t)
	video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "whip-test")
	if err != nil {
		t.Fatal(err)
	}
	audio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "whip-test")
	if err != nil {
		t.Fatal(err)
	}
	for _, track := range []webrtc.TrackLocal{video, audio} {
		sender, err := pc.AddTrack(track)
		if err != nil {
			t.Fatal(err)
		}
		go func() { // RTCP: the server's keyframe requests
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(n.HTTPURL+"/live/whip/whip", "application/sdp", strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") == "" {
		t.Fatalf("WHIP: %d %v\n%s", resp.StatusCode, resp.Header, answer)
	}
	if a := resp.Header.Get("X-Meshcast-Audio"); a != mcwebrtc.AudioAAC {
		t.Errorf("X-Meshcast-Audio %q, want %q", a, mcwebrtc.AudioAAC)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sent := make(chan error, 2)
	go func() { sent <- sendH264(ctx, clip, video) }()
	go func() { sent <- sendOpus(ctx, tone, audio) }()
	defer func() { cancel(); <-sent; <-sent }()
	// Live with video and audio: the Opus arrives as AAC.
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, "live/whip")
	if a := sessionAudio(t, n.HTTPURL, resp.Header.Get("Location")); a != mcwebrtc.AudioAAC {
		t.Errorf("the API says the audio is %q, want %q", a, mcwebrtc.AudioAAC)
	}
	rtmp := fmt.Sprintf("rtmp://127.0.0.1:%d/live/whip", n.RTMPPort)
	if w, h, err := e2eutil.VideoSize(rtmp); err != nil || w != 640 || h != 360 {
		t.Errorf("%s: %dx%d %v, want 640x360 h264", rtmp, w, h, err)
	}
	for _, url := range []string{rtmp, n.HTTPURL + "/live/whip.flv"} {
		if codecs, err := liveCodecs(url); err != nil || codecs != "h264,aac" && codecs != "aac,h264" {
			t.Errorf("ffprobe %s: %q %v, want h264 and aac", url, codecs, err)
		}
	}
	// Audio and video keep their timing: a recording of the playback
	// starts both together, give or take the transcoder's delay.
	rec := filepath.Join(dir, "rec.flv")
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	if out, err := exec.CommandContext(rctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", rtmp, "-t", "3", "-c", "copy", rec).CombinedOutput(); err != nil {
		t.Fatalf("recording %s: %v: %s", rtmp, err, out)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,start_time", "-of", "csv=p=0", rec).Output()
	starts := map[string]float64{}
	for _, line := range strings.Fields(string(out)) {
		var codec string
		var start float64
		if c, v, ok := strings.Cut(line, ","); ok {
			codec = c
			fmt.Sscan(v, &start)
		}
		starts[codec] = start
	}
	if d := starts["aac"] - starts["h264"]; err != nil || len(starts) != 2 || d < -0.3 || d > 0.3 {
		t.Errorf("recorded streams start at %v (%v), want h264 and aac within 300 ms", starts, err)
	}
	t.Logf("playback starts: %v", starts)
	// ffmpeg plays it back: 60 frames of video and 50 of audio decoded.
	pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer pcancel()
	for _, m := range []string{"0:v:0 -frames:v 60", "0:a:0 -frames:a 50"} {
		args := append([]string{"-hide_banner", "-loglevel", "error", "-i", rtmp, "-map"}, strings.Fields(m)...)
		if out, err := exec.CommandContext(pctx, "ffmpeg", append(args, "-f", "null", "-")...).CombinedOutput(); err != nil {
			t.Errorf("ffmpeg playing %s (%s): %v: %s", rtmp, m, err, out)
		}
	}
}
