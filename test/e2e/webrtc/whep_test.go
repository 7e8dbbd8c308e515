//go:build unix

package webrtc

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/config"
	mcwebrtc "github.com/meshcast/meshcast/internal/server/webrtc"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// sessionAudio is what GET /api/v1/webrtc/sessions says about the audio
// of the session at location.
func sessionAudio(t *testing.T, base, location string) string {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, base+"/api/v1/webrtc/sessions")
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
	t.Parallel()
	n := e2eutil.StartNode(t, nil)
	const name = "live/rtc"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, name)

	v := e2eutil.PlayWHEP(t, n.HTTPURL, name, true)
	testutil.WaitFor(t, 20*time.Second, "300 H.264 RTP packets with a keyframe and 100 Opus packets", func() bool {
		return v.Video.Load() >= 300 && v.Keyframes.Load() > 0 && v.Opus.Load() >= 100
	})
	t.Logf("first Opus packet %v after the answer; %d of %d Opus packets 960 ticks after the one before",
		v.AudioLatency().Round(time.Millisecond), v.OpusSteps.Load(), v.Opus.Load())
	if !v.Received(webrtc.MimeTypeH264) || !v.Received(webrtc.MimeTypeOpus) {
		t.Errorf("tracks received: %v, want H.264 and Opus", v.Mimes)
	}
	// RTP timestamps advance by the packets' 20 ms, as a decoder expects.
	if steps, all := v.OpusSteps.Load(), v.Opus.Load(); steps < all*9/10 {
		t.Errorf("%d of %d Opus packets 20 ms after the one before", steps, all)
	}
	if v.Audio != mcwebrtc.AudioOpus {
		t.Errorf("X-Meshcast-Audio %q, want %q", v.Audio, mcwebrtc.AudioOpus)
	}
	if a := sessionAudio(t, n.HTTPURL, v.Location); a != mcwebrtc.AudioOpus {
		t.Errorf("the API says the audio is %q, want %q", a, mcwebrtc.AudioOpus)
	}

	// A second viewer shares the stream's transcoder.
	v2 := e2eutil.PlayWHEP(t, n.HTTPURL, name, true)
	testutil.WaitFor(t, 10*time.Second, "Opus at the second viewer", func() bool { return v2.Opus.Load() >= 50 })
	t.Logf("second viewer: first Opus packet %v after the answer", v2.AudioLatency().Round(time.Millisecond))

	// A viewer offering no audio gets video only, and is told why.
	v3 := e2eutil.PlayWHEP(t, n.HTTPURL, name, false)
	if v3.Audio != mcwebrtc.NoAudioOffer {
		t.Errorf("without audio in the offer, X-Meshcast-Audio %q, want %q", v3.Audio, mcwebrtc.NoAudioOffer)
	}
	testutil.WaitFor(t, 10*time.Second, "video at the viewer without audio", func() bool { return v3.Video.Load() >= 100 })
	// The transcoder is nobody watching: the API counts the three viewers.
	var info struct {
		Viewers      map[string]int `json:"viewers"`
		ViewersTotal int            `json:"viewers_total"`
	}
	if code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/"+name); code != 200 || json.Unmarshal(body, &info) != nil ||
		info.Viewers["webrtc"] != 3 || info.ViewersTotal != 3 {
		t.Errorf("the API counts viewers %v, %d in all; want 3 webrtc: %s", info.Viewers, info.ViewersTotal, body)
	}
	if _, m := e2eutil.HTTPGet(t, n.HTTPURL+"/metrics"); !strings.Contains(string(m), `meshcast_viewers{protocol="webrtc"} 3`) ||
		!strings.Contains(string(m), `meshcast_stream_viewers{protocol="webrtc",stream="live/rtc"} 3`) {
		t.Errorf("the metrics do not count the 3 WHEP viewers")
	}

	do := func(method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, n.HTTPURL+path, strings.NewReader("a=ice-ufrag:x\r\n"))
		resp, err := e2eutil.WHEPClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	id := v.Location[strings.LastIndexByte(v.Location, '/')+1:]
	// Trickle ICE and ICE restarts are not supported: 405, as WHEP asks.
	if code := do("PATCH", v.Location); code != http.StatusMethodNotAllowed {
		t.Errorf("PATCH %s: %d, want 405", v.Location, code)
	}
	// The session's ID under another stream, or as WHIP, names nothing.
	for _, path := range []string{"/live/other/whep/" + id, "/" + name + "/whip/" + id} {
		if code := do("DELETE", path); code != http.StatusNotFound {
			t.Errorf("DELETE %s: %d, want 404", path, code)
		}
	}
	if code := do("DELETE", v.Location); code != 200 {
		t.Fatalf("DELETE %s: %d, want 200", v.Location, code)
	}
	// The node's own session URL keeps working.
	id2 := v2.Location[strings.LastIndexByte(v2.Location, '/')+1:]
	if code := do("DELETE", mcwebrtc.SessionPath+id2); code != 200 {
		t.Errorf("DELETE %s: %d, want 200", mcwebrtc.SessionPath+id2, code)
	}
	testutil.WaitFor(t, 5*time.Second, "the second session to end", func() bool { return v2.PC.ConnectionState() != webrtc.PeerConnectionStateConnected })
	testutil.WaitFor(t, 5*time.Second, "the session to end", func() bool { return v.PC.ConnectionState() != webrtc.PeerConnectionStateConnected })
	// A bad offer is refused with a reason; a missing stream is 404.
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/" + name + "/whep", "v=0\r\nnot sdp", http.StatusBadRequest},
		{"/live/nothing/whep", v.PC.LocalDescription().SDP, http.StatusNotFound},
	} {
		resp, err := e2eutil.WHEPClient.Post(n.HTTPURL+c.path, "application/sdp", strings.NewReader(c.body))
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
	t.Parallel()
	n := e2eutil.StartNode(t, func(c *config.Config) { c.WebRTCOpus = false })
	const name = "live/rtc-noopus"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, name)
	v := e2eutil.PlayWHEP(t, n.HTTPURL, name, true)
	testutil.WaitFor(t, 20*time.Second, "300 H.264 RTP packets", func() bool { return v.Video.Load() >= 300 })
	if v.Opus.Load() != 0 || v.Received(webrtc.MimeTypeOpus) {
		t.Errorf("%d Opus packets with transcoding off", v.Opus.Load())
	}
	if v.Audio != mcwebrtc.NoAudio {
		t.Errorf("X-Meshcast-Audio %q, want %q", v.Audio, mcwebrtc.NoAudio)
	}
	if a := sessionAudio(t, n.HTTPURL, v.Location); a != mcwebrtc.NoAudio || !strings.Contains(a, "AAC") {
		t.Errorf("the API says the audio is %q, want %q", a, mcwebrtc.NoAudio)
	}
}
