//go:build unix

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/config"
	mcwebrtc "github.com/meshcast/meshcast/internal/server/webrtc"
)

// whepViewer is a pion client playing a stream over WebRTC, signalled by
// WHEP, counting the RTP it receives.
type whepViewer struct {
	pc       *webrtc.PeerConnection
	location string // the session's URL
	audio    string // the answer's X-Meshcast-Audio
	answered time.Time

	video, keyframes, opus atomic.Int64
	opusSteps              atomic.Int64 // Opus packets 960 ticks (20 ms) after the one before

	mu         sync.Mutex
	mimes      map[string]bool // codecs of the tracks received
	firstAudio time.Time
}

// playWHEP starts a WHEP session for stream name at base, offering to
// receive video and, with audio, audio.
func playWHEP(t *testing.T, base, name string, audio bool) *whepViewer {
	t.Helper()
	v := &whepViewer{pc: loopbackPeer(t), mimes: map[string]bool{}}
	kinds := []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}
	if audio {
		kinds = append(kinds, webrtc.RTPCodecTypeAudio)
	}
	for _, k := range kinds {
		if _, err := v.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		mime := tr.Codec().MimeType
		v.mu.Lock()
		v.mimes[mime] = true
		v.mu.Unlock()
		var last uint32
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			switch mime {
			case webrtc.MimeTypeH264:
				v.video.Add(1)
				// An IDR NAL unit, alone or in an FU-A or STAP-A packet.
				if pl := p.Payload; len(pl) > 1 && (pl[0]&0x1f == 5 || pl[0]&0x1f == 28 && pl[1]&0x1f == 5 || pl[0]&0x1f == 24) {
					v.keyframes.Add(1)
				}
			case webrtc.MimeTypeOpus:
				if v.opus.Add(1) == 1 {
					v.mu.Lock()
					v.firstAudio = time.Now()
					v.mu.Unlock()
				} else if p.Timestamp-last == 960 {
					v.opusSteps.Add(1)
				}
				last = p.Timestamp
			}
		}
	})
	offer, err := v.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(v.pc)
	if err := v.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	resp, err := whepClient.Post(base+"/"+name+"/whep", "application/sdp", strings.NewReader(v.pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	v.answered = time.Now()
	v.location, v.audio = resp.Header.Get("Location"), resp.Header.Get("X-Meshcast-Audio")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(v.location, "/api/v1/webrtc/sessions/") || resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("WHEP: %d %v\n%s", resp.StatusCode, resp.Header, answer)
	}
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	return v
}

// received reports whether a track of codec mime arrived.
func (v *whepViewer) received(mime string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mimes[mime]
}

// audioLatency is the time from the answer to the first Opus packet.
func (v *whepViewer) audioLatency() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.firstAudio.Sub(v.answered)
}

var whepClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// sessionAudio is what GET /api/v1/webrtc/sessions says about the audio
// of the session at location.
func sessionAudio(t *testing.T, base, location string) string {
	t.Helper()
	code, body := httpGet(t, base+"/api/v1/webrtc/sessions")
	var list struct {
		Sessions []struct {
			ID, Kind, Audio string
		} `json:"sessions"`
	}
	if code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("GET /api/v1/webrtc/sessions: %d %s", code, body)
	}
	for _, s := range list.Sessions {
		if strings.HasSuffix(location, "/"+s.ID) {
			return s.Audio
		}
	}
	t.Fatalf("GET /api/v1/webrtc/sessions does not list %s: %s", location, body)
	return ""
}

// TestWHEP: a pion client plays a stream published with ffmpeg (H.264
// and AAC) over WebRTC, signalled by WHEP: it receives H.264 RTP, and the
// AAC as Opus RTP 20 ms apart, and the answer and the API say the audio
// is transcoded; DELETE on the session's URL ends it.
func TestWHEP(t *testing.T) {
	n := startNode(t, nil)
	const name = "live/rtc"
	publishFFmpegLoop(t, n.rtmpURL(name))
	waitLiveHTTP(t, n.httpURL, name)

	v := playWHEP(t, n.httpURL, name, true)
	waitFor(t, 20*time.Second, "300 H.264 RTP packets with a keyframe and 100 Opus packets", func() bool {
		return v.video.Load() >= 300 && v.keyframes.Load() > 0 && v.opus.Load() >= 100
	})
	t.Logf("first Opus packet %v after the answer; %d of %d Opus packets 960 ticks after the one before",
		v.audioLatency().Round(time.Millisecond), v.opusSteps.Load(), v.opus.Load())
	if !v.received(webrtc.MimeTypeH264) || !v.received(webrtc.MimeTypeOpus) {
		t.Errorf("tracks received: %v, want H.264 and Opus", v.mimes)
	}
	// RTP timestamps advance by the packets' 20 ms, as a decoder expects.
	if steps, all := v.opusSteps.Load(), v.opus.Load(); steps < all*9/10 {
		t.Errorf("%d of %d Opus packets 20 ms after the one before", steps, all)
	}
	if v.audio != mcwebrtc.AudioOpus {
		t.Errorf("X-Meshcast-Audio %q, want %q", v.audio, mcwebrtc.AudioOpus)
	}
	if a := sessionAudio(t, n.httpURL, v.location); a != mcwebrtc.AudioOpus {
		t.Errorf("the API says the audio is %q, want %q", a, mcwebrtc.AudioOpus)
	}

	// A second viewer shares the stream's transcoder.
	v2 := playWHEP(t, n.httpURL, name, true)
	waitFor(t, 10*time.Second, "Opus at the second viewer", func() bool { return v2.opus.Load() >= 50 })
	t.Logf("second viewer: first Opus packet %v after the answer", v2.audioLatency().Round(time.Millisecond))

	// A viewer offering no audio gets video only, and is told why.
	v3 := playWHEP(t, n.httpURL, name, false)
	if v3.audio != mcwebrtc.NoAudioOffer {
		t.Errorf("without audio in the offer, X-Meshcast-Audio %q, want %q", v3.audio, mcwebrtc.NoAudioOffer)
	}
	waitFor(t, 10*time.Second, "video at the viewer without audio", func() bool { return v3.video.Load() >= 100 })
	// The transcoder is nobody watching: the API counts the three viewers.
	var info struct {
		Viewers      map[string]int `json:"viewers"`
		ViewersTotal int            `json:"viewers_total"`
	}
	if code, body := httpGet(t, n.httpURL+"/api/v1/streams/"+name); code != 200 || json.Unmarshal(body, &info) != nil ||
		info.Viewers["webrtc"] != 3 || info.ViewersTotal != 3 {
		t.Errorf("the API counts viewers %v, %d in all; want 3 webrtc: %s", info.Viewers, info.ViewersTotal, body)
	}

	req, _ := http.NewRequest("DELETE", n.httpURL+v.location, nil)
	resp, err := whepClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE %s: %v %v", v.location, err, resp)
	}
	resp.Body.Close()
	waitFor(t, 5*time.Second, "the session to end", func() bool { return v.pc.ConnectionState() != webrtc.PeerConnectionStateConnected })
	// A bad offer is refused with a reason; a missing stream is 404.
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/" + name + "/whep", "v=0\r\nnot sdp", http.StatusBadRequest},
		{"/live/nothing/whep", v.pc.LocalDescription().SDP, http.StatusNotFound},
	} {
		resp, err := whepClient.Post(n.httpURL+c.path, "application/sdp", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("POST %s: %d, want %d", c.path, resp.StatusCode, c.want)
		}
	}
}

// TestWHEPAudioOff: with --webrtc-opus=false, a WHEP viewer offering
// audio gets video only, and the answer and the API say why.
func TestWHEPAudioOff(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.WebRTCOpus = false })
	const name = "live/rtc-noopus"
	publishFFmpegLoop(t, n.rtmpURL(name))
	waitLiveHTTP(t, n.httpURL, name)
	v := playWHEP(t, n.httpURL, name, true)
	waitFor(t, 20*time.Second, "300 H.264 RTP packets", func() bool { return v.video.Load() >= 300 })
	if v.opus.Load() != 0 || v.received(webrtc.MimeTypeOpus) {
		t.Errorf("%d Opus packets with transcoding off", v.opus.Load())
	}
	if v.audio != mcwebrtc.NoAudio {
		t.Errorf("X-Meshcast-Audio %q, want %q", v.audio, mcwebrtc.NoAudio)
	}
	if a := sessionAudio(t, n.httpURL, v.location); a != mcwebrtc.NoAudio || !strings.Contains(a, "AAC") {
		t.Errorf("the API says the audio is %q, want %q", a, mcwebrtc.NoAudio)
	}
}
