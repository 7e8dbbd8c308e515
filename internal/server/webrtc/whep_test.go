package webrtc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// testHub is the node's stream table for a WebRTC server under test:
// streams made by the test, everybody admitted, sessions not recorded.
type testHub struct{ testStreams }

func (h *testHub) Get(streamname.Name) *stream.Stream { return nil }

func (h *testHub) Publish(streamname.Name, stream.PublisherInfo) (*stream.Publisher, error) {
	return nil, errors.New("no publishing here")
}

func (h *testHub) Admit(string, string) (*hub.Place, error) { return nil, nil }

func (h *testHub) StartSession(hub.Session, func()) (string, func()) { return "", func() {} }

// testServer starts a WebRTC server on loopback, one UDP socket for all
// sessions, and an HTTP server with its WHEP routes.
func testServer(t testing.TB, h Hub) (*Server, string) {
	t.Helper()
	s, err := New(Config{UDPAddr: "127.0.0.1:0", Logger: quietLogger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{app}/{stream}/whep", s.serveWHEPRoute)
	mux.HandleFunc("DELETE /{app}/{stream}/whep/{id}", func(w http.ResponseWriter, r *http.Request) { s.serveSession(w, r, "whep") })
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, hs.URL
}

// frameAU is frame i of a test stream, as NAL units: an IDR (parameter
// sets first, and large enough to be fragmented) every 30 frames, else a
// P slice; each slice carries i in its second and third bytes.
func frameAU(i int) [][]byte {
	if i%30 == 0 {
		idr := make([]byte, 3000)
		idr[0], idr[1], idr[2] = 0x65, byte(i>>8), byte(i)
		for j := 3; j < len(idr); j++ {
			idr[j] = byte(i + j)
		}
		return [][]byte{testSPS, testPPS, idr}
	}
	return [][]byte{{0x41, byte(i >> 8), byte(i), 7, 7, 7}}
}

// frameNumber is the number a test frame's Annex B access unit carries.
func frameNumber(au []byte) int {
	units := splitAnnexB(au)
	s := units[len(units)-1]
	return int(s[1])<<8 | int(s[2])
}

// publishing publishes frames to a new stream of h every 10 ms until the
// test ends.
func publishing(t testing.TB, h *testHub, name streamname.Name) *stream.Stream {
	st, pub := h.add(t, name)
	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishFrames(ctx, pub, 10*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-published })
	return st
}

// publishFrames publishes test frames every interval until ctx ends.
func publishFrames(ctx context.Context, pub *stream.Publisher, interval time.Duration) {
	var z media.NALUPacketizer
	var out []*media.Packet
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		dts := int64(i) * 33
		out = z.Packets(out[:0], dts, dts, frameAU(i))
		for _, p := range out {
			if pub.WritePacket(p) != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// testViewer is a pion player of a WHEP session that keeps the RTP it
// receives. It neither asks for retransmissions nor drops repeated
// packets, unless the test does.
type testViewer struct {
	pc       *webrtc.PeerConnection
	location string
	count    bool         // count packets rather than keep them
	n        atomic.Int64 // packets received
	mu       sync.Mutex
	pkts     []*rtp.Packet
	ssrc     uint32
}

func playWHEP(t testing.TB, base, name string) *testViewer {
	return playWHEPWith(t, base, name, false)
}

// playWHEPWith is playWHEP, counting packets rather than keeping them
// with count.
func playWHEPWith(t testing.TB, base, name string, count bool) *testViewer {
	t.Helper()
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(iface string) bool { return iface == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.DisableSRTPReplayProtection(true)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(&interceptor.Registry{})).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	v := &testViewer{pc: pc, count: count}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.mu.Lock()
		v.ssrc = uint32(tr.SSRC())
		v.mu.Unlock()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if v.n.Add(1); v.count {
				continue
			}
			v.mu.Lock()
			v.pkts = append(v.pkts, p)
			v.mu.Unlock()
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
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(base+"/"+name+"/whep", "application/sdp", strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP: %d %s", resp.StatusCode, answer)
	}
	v.location = resp.Header.Get("Location")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	return v
}

// packets returns what the viewer has received so far.
func (v *testViewer) packets() []*rtp.Packet {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]*rtp.Packet(nil), v.pkts...)
}

// checkFrames checks a viewer's first packets: sequence numbers without
// a gap, frames that are the stream's, whole and in order from a
// keyframe, 33 ms apart; it returns how many frames.
func checkFrames(t *testing.T, who string, pkts []*rtp.Packet) int {
	t.Helper()
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("%s: packet %d has seq %d after %d", who, i, pkts[i].SequenceNumber, pkts[i-1].SequenceNumber)
		}
	}
	var stamps []uint32
	for _, p := range pkts {
		if p.Marker {
			stamps = append(stamps, p.Timestamp)
		}
	}
	aus := depacketize(t, pkts)
	cfg := &media.VideoConfig{Codec: media.CodecH264, ParamSets: [][]byte{testSPS, testPPS}}
	first := frameNumber(aus[0])
	if first%30 != 0 {
		t.Fatalf("%s: starts at frame %d, not a keyframe", who, first)
	}
	for i, au := range aus {
		n := frameNumber(au)
		if n != first+i {
			t.Fatalf("%s: access unit %d is frame %d, want %d", who, i, n, first+i)
		}
		if want := annexB(cfg.WithParamSets(frameAU(n), n%30 == 0)); !bytes.Equal(au, want) {
			t.Fatalf("%s: frame %d is %x..., want %x...", who, n, au[:min(len(au), 24)], want[:min(len(want), 24)])
		}
		if i > 0 && stamps[i]-stamps[i-1] != 33*90 {
			t.Fatalf("%s: frame %d is %d ticks after the one before, want %d", who, n, stamps[i]-stamps[i-1], 33*90)
		}
	}
	return len(aus)
}

// TestWHEPSharedFeed: two pion players of one stream get its frames whole
// and in order from a keyframe, packetized once by the stream's one feed
// while each counts as a viewer of the stream; a NACK brings a packet
// again, a PLI is counted; when both have left, the feed ends and leaves
// no reader behind.
func TestWHEPSharedFeed(t *testing.T) {
	h := &testHub{}
	st := publishing(t, h, "live/feed")
	s, base := testServer(t, h)

	a := playWHEP(t, base, "live/feed")
	b := playWHEP(t, base, "live/feed")
	testutil.WaitFor(t, 20*time.Second, "60 frames at each viewer", func() bool {
		return len(depacketize(t, trimFrames(a.packets()))) >= 60 && len(depacketize(t, trimFrames(b.packets()))) >= 60
	})
	for who, v := range map[string]*testViewer{"a": a, "b": b} {
		t.Logf("viewer %s: %d frames", who, checkFrames(t, who, trimFrames(v.packets())))
	}
	s.mu.Lock()
	feeds := len(s.feeds)
	s.mu.Unlock()
	readers := st.Stats().ReaderCount
	if feeds != 1 || readers["webrtc"] != 2 || readers[hub.TranscodeProtocol] != 1 {
		t.Errorf("%d feeds, readers %v; want one feed and 2 webrtc readers", feeds, readers)
	}

	// A NACK for a packet received brings it again.
	got := a.packets()
	asked := got[len(got)/2]
	a.mu.Lock()
	ssrc := a.ssrc
	a.mu.Unlock()
	if err := a.pc.WriteRTCP([]rtcp.Packet{
		&rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: []rtcp.NackPair{{PacketID: asked.SequenceNumber}}},
		&rtcp.PictureLossIndication{MediaSSRC: ssrc},
	}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the packet NACKed to come again", func() bool {
		for _, p := range a.packets()[len(got):] {
			if p.SequenceNumber == asked.SequenceNumber && p.Timestamp == asked.Timestamp && bytes.Equal(p.Payload, asked.Payload) {
				return true
			}
		}
		return false
	})
	sa := s.sessionOf(a.location)
	testutil.WaitFor(t, 5*time.Second, "the PLI to be counted", func() bool { return sa.video.plis.Load() == 1 })
	if n := sa.video.resent.Load(); n != 1 {
		t.Errorf("%d packets resent, want 1", n)
	}

	for _, v := range []*testViewer{a, b} {
		req, _ := http.NewRequest(http.MethodDelete, base+v.location, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	testutil.WaitFor(t, 10*time.Second, "the feed to end", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.feeds) == 0 && len(s.sessions) == 0
	})
	testutil.WaitFor(t, 5*time.Second, "the readers to close", func() bool {
		r := st.Stats().ReaderCount
		return r["webrtc"] == 0 && r[hub.TranscodeProtocol] == 0
	})
}

// trimFrames drops the packets after the last marker: a frame still
// arriving.
func trimFrames(pkts []*rtp.Packet) []*rtp.Packet {
	for i := len(pkts) - 1; i >= 0; i-- {
		if pkts[i].Marker {
			return pkts[:i+1]
		}
	}
	return nil
}

// sessionOf returns the session at location.
func (s *Server) sessionOf(location string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[location[strings.LastIndexByte(location, '/')+1:]]
}

// BenchmarkWHEPFanout measures sending a stream's frames to WHEP viewers
// on loopback, each frame three RTP packets, the publisher at most
// fanoutWindow frames ahead of the slowest viewer. It counts the players'
// receiving as well as the server's sending.
func BenchmarkWHEPFanout(b *testing.B) {
	const fanoutWindow = 16
	for _, viewers := range []int{1, 20} {
		b.Run(fmt.Sprintf("viewers=%d", viewers), func(b *testing.B) {
			h := &testHub{}
			_, pub := h.add(b, "live/bench")
			var z media.NALUPacketizer
			write := func(i int, au [][]byte) {
				for _, p := range z.Packets(nil, int64(i)*33, int64(i)*33, au) {
					if err := pub.WritePacket(p); err != nil {
						b.Fatal(err)
					}
				}
			}
			write(0, frameAU(0))
			_, base := testServer(b, h)
			vs := make([]*testViewer, viewers)
			for i := range vs {
				vs[i] = playWHEPWith(b, base, "live/bench", true)
			}
			received := func(n int64) bool {
				for _, v := range vs {
					if v.n.Load() < n {
						return false
					}
				}
				return true
			}
			testutil.WaitFor(b, 20*time.Second, "the keyframe at every viewer", func() bool { return received(3) })
			start := make([]int64, viewers)
			for i, v := range vs {
				start[i] = v.n.Load()
			}
			// A P frame of three packets.
			slice := make([]byte, 3*1100)
			slice[0] = 0x41
			b.ResetTimer()
			for i := 1; i <= b.N+fanoutWindow; i++ {
				if i <= b.N {
					write(i, [][]byte{slice})
				}
				if i <= fanoutWindow {
					continue
				}
				deadline := time.Now().Add(5 * time.Second)
				for j, v := range vs {
					for v.n.Load()-start[j] < int64(3*(i-fanoutWindow)) {
						if time.Now().After(deadline) {
							b.Fatalf("viewer %d has %d packets of %d", j, v.n.Load()-start[j], 3*(i-fanoutWindow))
						}
						runtime.Gosched()
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*3*viewers), "ns/packet-viewer")
		})
	}
}

// TestWHEPStreamEnds: when its stream ends, a viewer's session ends, and
// so does the stream's feed.
func TestWHEPStreamEnds(t *testing.T) {
	h := &testHub{}
	st := publishing(t, h, "live/ends")
	s, base := testServer(t, h)
	v := playWHEP(t, base, "live/ends")
	testutil.WaitFor(t, 20*time.Second, "video at the viewer", func() bool { return len(v.packets()) >= 10 })
	st.Close()
	testutil.WaitFor(t, 10*time.Second, "the session and the feed to end", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.feeds) == 0 && len(s.sessions) == 0
	})
	if r := st.Stats().ReaderCount; r["webrtc"] != 0 || r[hub.TranscodeProtocol] != 0 {
		t.Errorf("readers left: %v", r)
	}
}
