//go:build unix

package e2eutil

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// WHEPViewer is a pion client playing a stream over WebRTC, signalled by
// WHEP, counting the RTP it receives.
type WHEPViewer struct {
	PC       *webrtc.PeerConnection // the player's peer connection
	Location string                 // the session's URL
	Audio    string                 // the answer's X-Meshcast-Audio
	Answer   string                 // the answer's SDP
	Header   http.Header            // the answer's headers
	answered time.Time

	Video, Keyframes, Opus atomic.Int64 // RTP packets received: H.264, those with an IDR, Opus
	OpusSteps              atomic.Int64 // Opus packets 960 ticks (20 ms) after the one before

	mu         sync.Mutex
	Mimes      map[string]bool // codecs of the tracks received
	firstAudio time.Time
}

// PlayWHEP starts a WHEP session for stream name at base, offering to
// receive video and, with audio, audio, from a LoopbackPeer.
func PlayWHEP(t *testing.T, base, name string, audio bool) *WHEPViewer {
	t.Helper()
	return PlayWHEPWith(t, LoopbackPeer(t), base, name, audio)
}

// PlayWHEPWith is PlayWHEP from the peer connection pc.
func PlayWHEPWith(t *testing.T, pc *webrtc.PeerConnection, base, name string, audio bool) *WHEPViewer {
	t.Helper()
	v := &WHEPViewer{PC: pc, Mimes: map[string]bool{}}
	kinds := []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo}
	if audio {
		kinds = append(kinds, webrtc.RTPCodecTypeAudio)
	}
	for _, k := range kinds {
		if _, err := v.PC.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v.PC.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		mime := tr.Codec().MimeType
		v.mu.Lock()
		v.Mimes[mime] = true
		v.mu.Unlock()
		var last uint32
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			switch mime {
			case webrtc.MimeTypeH264:
				v.Video.Add(1)
				// An IDR NAL unit, alone or in an FU-A or STAP-A packet.
				if pl := p.Payload; len(pl) > 1 && (pl[0]&0x1f == 5 || pl[0]&0x1f == 28 && pl[1]&0x1f == 5 || pl[0]&0x1f == 24) {
					v.Keyframes.Add(1)
				}
			case webrtc.MimeTypeOpus:
				if v.Opus.Add(1) == 1 {
					v.mu.Lock()
					v.firstAudio = time.Now()
					v.mu.Unlock()
				} else if p.Timestamp-last == 960 {
					v.OpusSteps.Add(1)
				}
				last = p.Timestamp
			}
		}
	})
	offer, err := v.PC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(v.PC)
	if err := v.PC.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	resp, err := WHEPClient.Post(base+"/"+name+"/whep", "application/sdp", strings.NewReader(v.PC.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	v.answered = time.Now()
	v.Location, v.Audio = resp.Header.Get("Location"), resp.Header.Get("X-Meshcast-Audio")
	v.Answer, v.Header = string(answer), resp.Header
	// The session's URL is under the stream's, so a balancer hashing on
	// the stream sends its DELETE to the node that holds it.
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(v.Location, "/"+name+"/whep/") || resp.Header.Get("Content-Type") != "application/sdp" {
		t.Fatalf("WHEP: %d %v\n%s", resp.StatusCode, resp.Header, answer)
	}
	if err := v.PC.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	return v
}

// Received reports whether a track of codec mime arrived.
func (v *WHEPViewer) Received(mime string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.Mimes[mime]
}

// AudioLatency is the time from the answer to the first Opus packet.
func (v *WHEPViewer) AudioLatency() time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.firstAudio.Sub(v.answered)
}

// WHEPClient is the HTTP client of WHEP requests, one connection each.
var WHEPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// LoopbackPeer is a pion peer connection that uses loopback only, over
// UDP.
func LoopbackPeer(t *testing.T) *webrtc.PeerConnection {
	t.Helper()
	return LoopbackPeerWith(t, nil)
}

// LoopbackPeerWith is LoopbackPeer with its settings changed by mod (if
// set): SetNetworkTypes for ICE-TCP, SetRemoteIPFilter for addresses the
// client cannot reach.
func LoopbackPeerWith(t *testing.T, mod func(*webrtc.SettingEngine)) *webrtc.PeerConnection {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(iface string) bool { return iface == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	if mod != nil {
		mod(&se)
	}
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
