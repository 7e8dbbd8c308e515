package e2e

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestWHEP: a pion client plays a stream published with ffmpeg over
// WebRTC, signalled by WHEP, and receives its H.264 RTP; DELETE on the
// session's URL ends it.
func TestWHEP(t *testing.T) {
	n := startNode(t, nil)
	const name = "live/rtc"
	publishFFmpegLoop(t, n.rtmpURL(name))
	waitFor(t, 15*time.Second, "the stream", func() bool {
		code, _ := httpGetQuiet(n.httpURL + "/api/v1/streams/" + name)
		return code == 200
	})

	pc := loopbackPeer(t)
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	var packets, keyframes atomic.Int64
	var mime atomic.Value
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		mime.Store(tr.Codec().MimeType)
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			packets.Add(1)
			// An IDR NAL unit, alone or in an FU-A or STAP-A packet.
			if pl := p.Payload; len(pl) > 1 && (pl[0]&0x1f == 5 || pl[0]&0x1f == 28 && pl[1]&0x1f == 5 || pl[0]&0x1f == 24) {
				keyframes.Add(1)
			}
		}
	})
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
	resp, err := client.Post(n.httpURL+"/"+name+"/whep", "application/sdp", strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	location := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(location, "/api/v1/webrtc/sessions/") || resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("WHEP: %d %v\n%s", resp.StatusCode, resp.Header, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "300 H.264 RTP packets with a keyframe", func() bool {
		return packets.Load() >= 300 && keyframes.Load() > 0
	})
	if got, _ := mime.Load().(string); got != webrtc.MimeTypeH264 {
		t.Errorf("track codec %q, want H.264", got)
	}
	// The API lists the session and says why it has no audio.
	if code, body := httpGet(t, n.httpURL+"/api/v1/webrtc/sessions"); code != 200 || !strings.Contains(string(body), `"kind":"whep"`) || !strings.Contains(string(body), "AAC") {
		t.Errorf("GET /api/v1/webrtc/sessions: %d %s", code, body)
	}
	if resp.Header.Get("X-Meshcast-Audio") == "" {
		t.Error("the answer does not say why there is no audio")
	}
	req, _ := http.NewRequest("DELETE", n.httpURL+location, nil)
	resp, err = client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE %s: %v %v", location, err, resp)
	}
	resp.Body.Close()
	waitFor(t, 5*time.Second, "the session to end", func() bool { return pc.ConnectionState() != webrtc.PeerConnectionStateConnected })
	// A bad offer is refused with a reason; a missing stream is 404.
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/" + name + "/whep", "v=0\r\nnot sdp", http.StatusBadRequest},
		{"/live/nothing/whep", pc.LocalDescription().SDP, http.StatusNotFound},
	} {
		resp, err := client.Post(n.httpURL+c.path, "application/sdp", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("POST %s: %d, want %d", c.path, resp.StatusCode, c.want)
		}
	}
}
