package e2e

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
)

// loopbackPeer is a pion peer connection that uses loopback only.
func loopbackPeer(t *testing.T) *webrtc.PeerConnection {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(iface string) bool { return iface == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

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

// TestWHIP: a pion client publishes H.264 over WebRTC, signalled by WHIP;
// ffmpeg plays the stream back over RTMP.
func TestWHIP(t *testing.T) {
	n := startNode(t, nil)
	clip := filepath.Join(t.TempDir(), "clip.h264")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p",
		"-f", "h264", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	pc := loopbackPeer(t)
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "whip-test")
	if err != nil {
		t.Fatal(err)
	}
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
	resp, err := client.Post(n.httpURL+"/live/whip/whip", "application/sdp", strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") == "" {
		t.Fatalf("WHIP: %d %v\n%s", resp.StatusCode, resp.Header, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sent := make(chan error, 1)
	go func() { sent <- sendH264(ctx, clip, track) }()
	defer func() { cancel(); <-sent }()
	waitFor(t, 15*time.Second, "the WHIP stream to be live", func() bool {
		code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/live/whip")
		return code == 200
	})
	url := fmt.Sprintf("rtmp://127.0.0.1:%d/live/whip", n.rtmpPort)
	if w, h, err := videoSize(url); err != nil || w != 640 || h != 360 {
		t.Errorf("%s: %dx%d %v, want 640x360 h264", url, w, h, err)
	}
	// ffmpeg plays it back: 60 frames decoded.
	pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer pcancel()
	if out, err := exec.CommandContext(pctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-i", url, "-frames:v", "60", "-f", "null", "-").CombinedOutput(); err != nil {
		t.Errorf("ffmpeg playing %s: %v: %s", url, err, out)
	}
}
