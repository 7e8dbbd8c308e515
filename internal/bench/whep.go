package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/webrtc/v4"
)

// A WHEP player is a pion peer connection that receives H.264 (and Opus,
// if a track comes) the way a browser does, without decoding it: it sends
// receiver reports and asks for lost packets (NACK) where the server
// negotiates it, and nothing else (no congestion feedback, no stats).
// Its RTP is read into one reused buffer and only the few bytes that tell
// keyframes and frame numbers apart are looked at.

// Signalling limits.
const (
	// whepSignalConns bounds the load generator's signalling connections
	// at once: servers limit the connections waiting on them per client
	// address (meshcast: 256), and a browser's viewers each have their
	// own address.
	whepSignalConns = 64
	// whepDeleteTimeout bounds the DELETE that ends a session.
	whepDeleteTimeout = 2 * time.Second
	// whepConnectTimeout bounds ICE and DTLS after the answer.
	whepConnectTimeout = 15 * time.Second
)

// whepClient signals WHEP sessions.
var whepClient = &http.Client{
	Timeout: 10 * time.Second,
	Transport: &http.Transport{
		MaxConnsPerHost:     whepSignalConns,
		MaxIdleConnsPerHost: whepSignalConns,
		IdleConnTimeout:     30 * time.Second,
	},
}

// whepAPIs are the pion APIs every WHEP player shares: one for servers on
// loopback, which uses the loopback interface alone, one for the others.
var whepAPIs [2]struct {
	once sync.Once
	api  *webrtc.API
	cert webrtc.Certificate
	err  error
}

// whepAPI returns the shared pion API for a server on loopback or not,
// and the DTLS certificate every peer connection presents: made once, it
// spares each player a key generation.
func whepAPI(loopback bool) (*webrtc.API, webrtc.Certificate, error) {
	i := 0
	if loopback {
		i = 1
	}
	a := &whepAPIs[i]
	a.once.Do(func() { a.api, a.cert, a.err = newWHEPAPI(loopback) })
	return a.api, a.cert, a.err
}

func newWHEPAPI(loopback bool) (*webrtc.API, webrtc.Certificate, error) {
	m := &webrtc.MediaEngine{}
	// H.264, non-interleaved, as browsers offer it: constrained baseline
	// first, as meshcast's WHEP answers it (payload type 102), then the
	// profiles other servers may answer with the stream's own; and Opus.
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for _, c := range []struct {
		pt      webrtc.PayloadType
		profile string
	}{{102, "42e01f"}, {104, "42001f"}, {106, "4d001f"}, {108, "640032"}} {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + c.profile, RTCPFeedback: fb},
			PayloadType: c.pt,
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, webrtc.Certificate{}, err
		}
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType: 111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, webrtc.Certificate{}, err
	}
	ir := &interceptor.Registry{}
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, webrtc.Certificate{}, err
	}
	ir.Add(rr)
	ng, err := nack.NewGeneratorInterceptor()
	if err != nil {
		return nil, webrtc.Certificate{}, err
	}
	ir.Add(ng)

	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if loopback {
		// One host candidate, on loopback, where the server is.
		se.SetIncludeLoopbackCandidate(true)
		se.SetInterfaceFilter(func(iface string) bool { return iface == "lo" })
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, webrtc.Certificate{}, err
	}
	cert, err := webrtc.GenerateCertificate(key)
	if err != nil {
		return nil, webrtc.Certificate{}, err
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return api, *cert, nil
}

// isLoopback reports whether host names or is a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// playWHEP plays a WHEP endpoint, http://HOST:PORT/APP/STREAM/whep: it
// POSTs an offer to receive video once its ICE candidates are gathered,
// plays until ctx ends, and DELETEs the session then.
func (p *player) playWHEP(ctx context.Context, u *url.URL) error {
	api, cert, err := whepAPI(isLoopback(u.Hostname()))
	if err != nil {
		return err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{Certificates: []webrtc.Certificate{cert}})
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		closed  bool
		readers sync.WaitGroup // audio tracks' readers
	)
	defer func() {
		mu.Lock()
		closed = true
		mu.Unlock()
		pc.Close()
		readers.Wait()
	}()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return err
	}
	video := make(chan *webrtc.TrackRemote, 1)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			select {
			case video <- tr:
			default:
			}
			return
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			return
		}
		readers.Add(1)
		mu.Unlock()
		defer readers.Done()
		p.readAudio(tr)
	})
	// The player joins when the connection is up, or at its first
	// packet if that comes first.
	var joinOnce sync.Once
	join := func() { joinOnce.Do(p.joined) }
	failed := make(chan struct{})
	var failOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			join()
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			failOnce.Do(func() { close(failed) })
		}
	})

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("whep: ICE gathering took over 10 s")
	}
	// A stream some servers list only once they have probed its tracks
	// (a second or two after its publisher began) is asked for again,
	// as a page's player retries: time to first frame starts anew with
	// each attempt.
	var (
		answer, location string
		local            net.Addr
	)
	for retry := time.Now().Add(whepNotYet); ; {
		answer, location, local, err = p.whepOffer(ctx, u, pc.LocalDescription().SDP)
		if !errors.Is(err, errNoStream) || time.Now().After(retry) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	if location != "" {
		defer whepDelete(location)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("whep: the answer: %w", err)
	}

	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	timeout := time.NewTimer(whepConnectTimeout)
	defer timeout.Stop()
	var track *webrtc.TrackRemote
	select {
	case track = <-video:
	case <-failed:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("whep: the peer connection failed")
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout.C:
		return fmt.Errorf("whep: no video %v after the answer", whepConnectTimeout)
	}
	return p.readVideo(ctx, track, local, join, failed)
}

// whepNotYet is how long a player asks again for a stream the server
// answers 404 for.
const whepNotYet = 10 * time.Second

// errNoStream is a WHEP endpoint's 404: no such stream, or not yet.
var errNoStream = errors.New("404 Not Found")

// whepOffer POSTs the offer and returns the answer, the session's URL
// and the local address of the signalling connection. The play starts
// when the request has a connection to go out on.
func (p *player) whepOffer(ctx context.Context, u *url.URL, offer string) (answer, location string, local net.Addr, err error) {
	p.playStart = time.Now()
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		p.playStart = time.Now()
		local = ci.Conn.LocalAddr()
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, u.String(), strings.NewReader(offer))
	if err != nil {
		return "", "", nil, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := whepClient.Do(req)
	if err != nil {
		return "", "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", "", nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return "", "", nil, fmt.Errorf("POST %s: %w: %s", u, errNoStream, strings.TrimSpace(string(body)))
	}
	if resp.StatusCode != http.StatusCreated {
		return "", "", nil, fmt.Errorf("POST %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		if l, err := u.Parse(loc); err == nil {
			location = l.String()
		}
	}
	return string(body), location, local, nil
}

// whepDelete ends a session, as a player that leaves does.
func whepDelete(location string) {
	ctx, cancel := context.WithTimeout(context.Background(), whepDeleteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, location, nil)
	if err != nil {
		return
	}
	resp, err := whepClient.Do(req)
	if err != nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
}

// rtpPayload returns an RTP packet's sequence number and payload.
func rtpPayload(b []byte) (seq uint16, payload []byte, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return 0, nil, false
	}
	seq = binary.BigEndian.Uint16(b[2:4])
	n := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 { // header extension
		if len(b) < n+4 {
			return 0, nil, false
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(b[n+2:n+4]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > 0 { // padding
		end -= int(b[end-1])
	}
	if n > end {
		return 0, nil, false
	}
	return seq, b[n:end], true
}

// H.264 NAL unit types (RFC 6184).
const (
	nalIDR   = 5
	nalSEI   = 6
	nalSTAPA = 24
	nalFUA   = 28
)

// h264Frame reports what an H.264 RTP payload holds: a frame number
// marker (the SEI meshcast bench puts first in every frame, alone or in
// a STAP-A) and the start of an IDR picture.
func h264Frame(pl []byte) (seq uint32, marked, idr bool) {
	if len(pl) < 2 {
		return 0, false, false
	}
	switch pl[0] & 0x1f {
	case nalIDR:
		return 0, false, true
	case nalSEI:
		seq, marked = frameNumber(pl)
		return seq, marked, false
	case nalFUA:
		return 0, false, pl[1]&0x80 != 0 && pl[1]&0x1f == nalIDR
	case nalSTAPA:
		for b := pl[1:]; len(b) > 2; {
			n := int(binary.BigEndian.Uint16(b))
			if n == 0 || len(b) < 2+n {
				break
			}
			nal := b[2 : 2+n]
			switch nal[0] & 0x1f {
			case nalIDR:
				idr = true
			case nalSEI:
				if s, ok := frameNumber(nal); ok {
					seq, marked = s, true
				}
			}
			b = b[2+n:]
		}
	}
	return seq, marked, idr
}

// readVideo reads the H.264 track until the connection ends; join is
// called at each packet.
func (p *player) readVideo(ctx context.Context, tr *webrtc.TrackRemote, local net.Addr, join func(), failed <-chan struct{}) error {
	buf := make([]byte, 1600)
	var (
		loss    lossCounter
		ext     int64 // the highest sequence number so far, unwrapped
		started bool
		dl      time.Time // the read deadline
	)
	for {
		if now := time.Now(); dl.Sub(now) < idleTimeout*2/3 {
			dl = now.Add(idleTimeout)
			tr.SetReadDeadline(dl)
		}
		n, _, err := tr.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case <-failed:
				return errors.New("whep: the peer connection failed")
			default:
			}
			if errors.Is(err, io.EOF) {
				return errors.New("whep: the track ended")
			}
			return fmt.Errorf("whep: %w", err)
		}
		now := time.Now()
		s, pl, ok := rtpPayload(buf[:n])
		if !ok {
			continue
		}
		join()
		p.bytes.Add(int64(len(pl)))
		seq := int64(s)
		if started {
			seq = ext + int64(int16(s-uint16(ext)))
		}
		if !started || seq > ext {
			ext, started = seq, true
		}
		loss.add(p, seq, now)
		fn, marked, idr := h264Frame(pl)
		if idr && p.first.IsZero() {
			p.firstPicture(local, now)
		}
		if marked {
			p.frame(now, fn, true)
		}
	}
}

// readAudio counts the bytes of an audio track until the connection
// ends.
func (p *player) readAudio(tr *webrtc.TrackRemote) {
	buf := make([]byte, 1600)
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if _, pl, ok := rtpPayload(buf[:n]); ok {
			p.bytes.Add(int64(len(pl)))
		}
	}
}
