//go:build unix

package webrtc

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// candidate is an ICE candidate of an SDP (RFC 8839 §5.1).
type candidate struct {
	transport, addr, typ, tcptype string
	port                          int
}

// candidates lists the a=candidate lines of an SDP.
func candidates(t *testing.T, sdp string) []candidate {
	t.Helper()
	var out []candidate
	for _, line := range strings.Split(sdp, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "a=candidate:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 8 || f[6] != "typ" {
			t.Fatalf("candidate line %q", line)
		}
		port, err := strconv.Atoi(f[5])
		if err != nil {
			t.Fatalf("candidate line %q: %v", line, err)
		}
		c := candidate{transport: strings.ToLower(f[2]), addr: f[4], port: port, typ: f[7]}
		for i := 8; i+1 < len(f); i += 2 {
			if f[i] == "tcptype" {
				c.tcptype = f[i+1]
			}
		}
		out = append(out, c)
	}
	return out
}

// natBox stands for a 1:1 NAT in front of the node: datagrams reaching
// public go on to private, the node's socket, each client's from a port of
// its own, and the node's answers go back to the client from public. It
// counts the datagrams each way.
type natBox struct {
	pub     *net.UDPConn
	private netip.AddrPort
	in, out atomic.Int64 // datagrams forwarded to the node, and back

	mu     sync.Mutex
	closed bool
	flows  map[netip.AddrPort]*net.UDPConn // by client
	wg     sync.WaitGroup
}

// startNATBox forwards public to private until the test ends.
func startNATBox(t *testing.T, public, private netip.AddrPort) *natBox {
	t.Helper()
	pub, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(public))
	if err != nil {
		t.Fatalf("the NAT's public address %s: %v", public, err)
	}
	b := &natBox{pub: pub, private: private, flows: map[netip.AddrPort]*net.UDPConn{}}
	b.wg.Add(1)
	go b.inbound()
	t.Cleanup(b.close)
	return b
}

// inbound forwards what clients send to the node.
func (b *natBox) inbound() {
	defer b.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, client, err := b.pub.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if c := b.flow(client); c != nil {
			if _, err := c.Write(buf[:n]); err == nil {
				b.in.Add(1)
			}
		}
	}
}

// flow is the socket of client's datagrams to the node, which forwards
// the node's answers back to client.
func (b *natBox) flow(client netip.AddrPort) *net.UDPConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.flows[client]; c != nil || b.closed {
		return c
	}
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.private))
	if err != nil {
		return nil
	}
	b.flows[client] = c
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if _, err := b.pub.WriteToUDPAddrPort(buf[:n], client); err == nil {
				b.out.Add(1)
			}
		}
	}()
	return c
}

func (b *natBox) close() {
	b.mu.Lock()
	b.closed = true
	b.pub.Close()
	for _, c := range b.flows {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// TestWHEPSinglePortNAT: with --webrtc-udp-addr 127.0.0.2:PORT and
// --webrtc-nat-ips 127.0.0.3, the node's socket is at 127.0.0.2 but its
// answers offer 127.0.0.3 PORT alone, the public address of a 1:1 NAT (a
// forwarder from 127.0.0.3:PORT to 127.0.0.2:PORT). Players that can
// reach the node only there (127.0.0.2 is filtered out, as a private
// address is for a client outside) get media through it, and a second
// session shares the same port.
func TestWHEPSinglePortNAT(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.WebRTCUDPAddr = "127.0.0.2:0"
		c.WebRTCNATIPs = []string{"127.0.0.3"}
	})
	const name = "live/rtc-nat"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, name)
	private := n.WebRTCUDPAddr().(*net.UDPAddr).AddrPort()
	if private.Addr() != netip.MustParseAddr("127.0.0.2") || private.Port() == 0 {
		t.Fatalf("the WebRTC socket is at %v, want 127.0.0.2:PORT", private)
	}
	port := int(private.Port())
	box := startNATBox(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), private.Port()), private)
	outside := func(se *webrtc.SettingEngine) {
		se.SetRemoteIPFilter(func(ip net.IP) bool { return !ip.Equal(net.ParseIP("127.0.0.2")) })
	}

	var viewers []*e2eutil.WHEPViewer
	for i := range 2 {
		v := e2eutil.PlayWHEPWith(t, e2eutil.LoopbackPeerWith(t, outside), n.HTTPURL, name, false)
		cands := candidates(t, v.Answer)
		if len(cands) == 0 {
			t.Fatalf("viewer %d: no candidate in the answer:\n%s", i, v.Answer)
		}
		for _, c := range cands {
			if c.addr != "127.0.0.3" || c.port != port || c.transport != "udp" || c.typ != "host" {
				t.Errorf("viewer %d: candidate %+v, want udp host 127.0.0.3 %d alone", i, c, port)
			}
		}
		viewers = append(viewers, v)
	}
	for i, v := range viewers {
		testutil.WaitFor(t, 20*time.Second, "100 H.264 RTP packets with a keyframe", func() bool {
			return v.Video.Load() >= 100 && v.Keyframes.Load() > 0
		})
		if st := v.PC.ICEConnectionState(); st != webrtc.ICEConnectionStateConnected && st != webrtc.ICEConnectionStateCompleted {
			t.Errorf("viewer %d: ICE %s", i, st)
		}
	}
	// Everything went through the NAT's public address: the players
	// could reach nothing else.
	var video int64
	for _, v := range viewers {
		video += v.Video.Load()
	}
	box.mu.Lock()
	flows := len(box.flows)
	box.mu.Unlock()
	if in, out := box.in.Load(), box.out.Load(); in == 0 || out < video || flows != 2 {
		t.Errorf("the NAT forwarded %d datagrams in and %d out for %d flows; want some in, at least the %d video packets out, 2 flows", in, out, flows, video)
	}
}

// TestWHEPOverICETCP: with --webrtc-udp-addr empty (a UDP port per
// session) and --webrtc-tcp-addr set, a player that cannot use UDP (its
// ICE takes TCP alone) plays over ICE-TCP: the answer offers a passive TCP
// candidate at the listener, the pair selected is TCP to it, and media
// arrives.
func TestWHEPOverICETCP(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.WebRTCUDPAddr, c.WebRTCTCPAddr = "", "127.0.0.1:0"
		c.WebRTCInterfaces = []string{"lo"}
	})
	if n.WebRTCUDPAddr() != nil {
		t.Fatalf("a shared UDP socket %v with --webrtc-udp-addr empty", n.WebRTCUDPAddr())
	}
	tcpPort := n.WebRTCTCPAddr().(*net.TCPAddr).Port
	const name = "live/rtc-tcp"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, name)

	tcpOnly := func(se *webrtc.SettingEngine) { se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4}) }
	v := e2eutil.PlayWHEPWith(t, e2eutil.LoopbackPeerWith(t, tcpOnly), n.HTTPURL, name, false)
	passive := false
	for _, c := range candidates(t, v.Answer) {
		switch {
		case c.transport == "tcp" && c.addr == "127.0.0.1" && c.port == tcpPort && c.tcptype == "passive":
			passive = true
		case c.transport == "tcp":
			t.Errorf("TCP candidate %+v, want passive at 127.0.0.1:%d", c, tcpPort)
		case c.addr != "127.0.0.1" && c.addr != "::1":
			t.Errorf("candidate %+v of an interface other than lo", c)
		}
	}
	if !passive {
		t.Fatalf("no passive TCP candidate at 127.0.0.1:%d in the answer:\n%s", tcpPort, v.Answer)
	}
	testutil.WaitFor(t, 20*time.Second, "100 H.264 RTP packets with a keyframe over ICE-TCP", func() bool {
		return v.Video.Load() >= 100 && v.Keyframes.Load() > 0
	})
	pair, err := v.PC.GetReceivers()[0].Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("selected candidate pair: %v %v", pair, err)
	}
	if pair.Local.Protocol != webrtc.ICEProtocolTCP || pair.Remote.Protocol != webrtc.ICEProtocolTCP || pair.Remote.Port != uint16(tcpPort) {
		t.Errorf("selected pair %s, want TCP to the node's port %d", pair, tcpPort)
	}
}

// iceLink is a Link header of an answer.
type iceLink struct {
	url    string
	params map[string]string
}

// iceLinks parses the Link headers of h.
func iceLinks(t *testing.T, h http.Header) []iceLink {
	t.Helper()
	var out []iceLink
	for _, v := range h.Values("Link") {
		url, rest, ok := strings.Cut(strings.TrimPrefix(v, "<"), ">")
		if !ok || !strings.HasPrefix(v, "<") {
			t.Fatalf("Link %q", v)
		}
		l := iceLink{url: url, params: map[string]string{}}
		for _, p := range strings.Split(rest, ";") {
			if k, val, ok := strings.Cut(strings.TrimSpace(p), "="); ok {
				l.params[k] = strings.Trim(val, `"`)
			}
		}
		out = append(out, l)
	}
	return out
}

// TestICEServerLinks: with STUN and TURN servers and a TURN secret, WHIP
// and WHEP answers carry them as Link headers (rel="ice-server"), TURN
// with credentials made for the session: a user name EXPIRY:SESSION with
// the expiry --webrtc-turn-ttl ahead, and the base64 HMAC-SHA1 of it
// under the secret, as coturn's use-auth-secret checks. No server is
// contacted: the players here use loopback alone.
func TestICEServerLinks(t *testing.T) {
	t.Parallel()
	const secret = "turn-secret-of-the-links-test"
	stunURL, turnURL := "stun:stun.example.net:3478", "turn:turn.example.net:3478?transport=udp"
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.WebRTCICEServers = []string{stunURL, turnURL}
		c.WebRTCTURNSecret = secret
		c.WebRTCTURNTTL = time.Hour
	})
	check := func(kind string, h http.Header) {
		t.Helper()
		now := time.Now()
		id := h.Get("Location")[strings.LastIndexByte(h.Get("Location"), '/')+1:]
		links := iceLinks(t, h)
		if len(links) != 2 || links[0].url != stunURL || links[1].url != turnURL {
			t.Fatalf("%s: Link headers %q, want %s and %s", kind, h.Values("Link"), stunURL, turnURL)
		}
		for _, l := range links {
			if l.params["rel"] != "ice-server" {
				t.Errorf("%s: %s has rel %q, want ice-server", kind, l.url, l.params["rel"])
			}
		}
		if s := links[0].params; s["username"] != "" || s["credential"] != "" {
			t.Errorf("%s: the STUN server comes with credentials %v", kind, s)
		}
		turn := links[1].params
		user := turn["username"]
		exp, who, _ := strings.Cut(user, ":")
		unix, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || who != id {
			t.Errorf("%s: TURN user name %q, want EXPIRY:%s", kind, user, id)
		}
		if d := time.Unix(unix, 0).Sub(now); d < 59*time.Minute || d > time.Hour+time.Minute {
			t.Errorf("%s: TURN credentials expire in %v, want an hour", kind, d)
		}
		mac := hmac.New(sha1.New, []byte(secret))
		mac.Write([]byte(user))
		if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); turn["credential"] != want || turn["credential-type"] != "password" {
			t.Errorf("%s: TURN credential %q (%s), want %q (password)", kind, turn["credential"], turn["credential-type"], want)
		}
		if e := h.Get("Access-Control-Expose-Headers"); !strings.Contains(e, "Link") || !strings.Contains(e, "Location") {
			t.Errorf("%s: Access-Control-Expose-Headers %q lacks Link and Location", kind, e)
		}
	}

	// WHIP: a publisher's offer, answered with the links.
	const name = "live/rtc-links"
	pub := e2eutil.LoopbackPeer(t)
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}, "video", "links-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	offer, err := pub.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pub)
	if err := pub.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	resp, err := e2eutil.WHEPClient.Post(n.HTTPURL+"/"+name+"/whip", "application/sdp", strings.NewReader(pub.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHIP: %d %s", resp.StatusCode, answer)
	}
	check("WHIP", resp.Header)
	if err := pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}

	// WHEP: a player of the stream the publisher started.
	v := e2eutil.PlayWHEP(t, n.HTTPURL, name, false)
	check("WHEP", v.Header)
	if a, b := iceLinks(t, resp.Header)[1].params["username"], iceLinks(t, v.Header)[1].params["username"]; a == b {
		t.Errorf("two sessions share the TURN user name %q", a)
	}
	// The secret itself is never shown.
	var settings map[string]any
	if code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/config"); code != 200 || strings.Contains(string(body), secret) ||
		json.Unmarshal(body, &settings) != nil || settings["webrtc_turn_secret"] != "REDACTED" {
		t.Errorf("GET /api/v1/config: %d %s", code, body)
	}
}
