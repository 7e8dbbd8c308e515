//go:build unix

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"
	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/mpegts"
	"github.com/meshcast/meshcast/internal/srtconn"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// The protocols viewers cycle over, in the order cycles take them.
const (
	protoRTMP  = "rtmp"
	protoFLV   = "http-flv"
	protoWSFLV = "ws-flv"
	protoHLS   = "hls"
	protoSRT   = "srt"
	protoWHEP  = "whep"
)

var protocols = []string{protoRTMP, protoFLV, protoWSFLV, protoHLS, protoSRT, protoWHEP}

// minFrames is the video frames a viewer of a frame-based protocol must
// receive for its cycle to count (a third of a second at 30 fps).
const minFrames = 10

// server is where the clients connect.
type server struct {
	httpURL  string // http://127.0.0.1:PORT
	rtmpAddr string // 127.0.0.1:PORT
	srtAddr  string // 127.0.0.1:PORT (UDP)
}

// viewer is one connect, read and disconnect cycle of a protocol: it
// returns what it got (frames, or bytes for HLS) once it has at least the
// minimum and has held the connection for hold, or an error.
type viewer func(ctx context.Context, s server, name string, hold time.Duration) (int64, error)

var viewers = map[string]viewer{
	protoRTMP:  viewRTMP,
	protoFLV:   viewFLV,
	protoWSFLV: viewWSFLV,
	protoHLS:   viewHLS,
	protoSRT:   viewSRT,
	protoWHEP:  viewWHEP,
}

// holding counts frames and says when a viewer has had enough: minFrames
// received and the hold time passed since.
type holding struct {
	hold   time.Duration
	frames int64
	enough time.Time // when minFrames arrived; zero before
}

// frame counts a video frame and reports whether the viewer may leave.
func (h *holding) frame() bool {
	h.frames++
	return h.done()
}

func (h *holding) done() bool {
	if h.frames < minFrames {
		return false
	}
	if h.enough.IsZero() {
		h.enough = time.Now()
	}
	return time.Since(h.enough) >= h.hold
}

// result is a viewer's answer: a viewer that got its frames succeeded,
// whatever ended its connection afterwards (its hold may outlast the
// publisher, or the cycle's deadline).
func (h *holding) result(err error) (int64, error) {
	if h.frames >= minFrames {
		return h.frames, nil
	}
	if err == nil {
		err = errors.New("ended")
	}
	return h.frames, fmt.Errorf("%d video frames, want %d: %w", h.frames, minFrames, err)
}

// viewRTMP plays over RTMP with meshcast's Go client.
func viewRTMP(ctx context.Context, s server, name string, hold time.Duration) (int64, error) {
	v, err := e2eutil.DialRTMPViewer(s.rtmpAddr, name)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	h := &holding{hold: hold}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		h.frames = v.Video.Load()
		if h.done() {
			return h.result(nil)
		}
		select {
		case <-ctx.Done():
			return h.result(ctx.Err())
		case <-v.Done:
			h.frames = v.Video.Load()
			err, _ := v.Err.Load().(error)
			return h.result(err)
		case <-tick.C:
		}
	}
}

// readFLV reads an FLV stream's tags until h has had enough.
func readFLV(r io.Reader, h *holding) (int64, error) {
	fr := flv.NewReader(bufio.NewReaderSize(r, 32<<10))
	if _, _, err := fr.ReadHeader(); err != nil {
		return h.result(err)
	}
	for {
		typ, ts, body, err := fr.ReadTag()
		if err != nil {
			return h.result(err)
		}
		if typ != 9 {
			continue
		}
		if p, err := flv.ParseVideo(ts, body); err == nil && !p.SeqHeader && h.frame() {
			return h.result(nil)
		}
	}
}

// flvClient is the HTTP-FLV viewers' client: one connection each, closed
// when the viewer leaves.
var flvClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: 10 * time.Second}}

// viewFLV plays over HTTP-FLV.
func viewFLV(ctx context.Context, s server, name string, hold time.Duration) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.httpURL+"/"+name+".flv", nil)
	if err != nil {
		return 0, err
	}
	resp, err := flvClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/x-flv" {
		return 0, fmt.Errorf("GET %s.flv: %s %s", name, resp.Status, resp.Header.Get("Content-Type"))
	}
	return readFLV(resp.Body, &holding{hold: hold})
}

var wsDialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second}

// viewWSFLV plays the HTTP-FLV URL as a WebSocket, as flv.js and
// mpegts.js do.
func viewWSFLV(ctx context.Context, s server, name string, hold time.Duration) (int64, error) {
	u := strings.Replace(s.httpURL, "http://", "ws://", 1) + "/" + name + ".flv"
	c, resp, err := wsDialer.DialContext(ctx, u, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (%s)", err, resp.Status)
		}
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	n, err := readFLV(&e2eutil.WSReader{Conn: c}, &holding{hold: hold})
	if err == nil {
		// A polite goodbye, as a page closing its player sends.
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}
	return n, err
}

// hlsClient is the HLS viewers' client: a player's keep-alive connection
// for the cycle's requests, closed when the viewer leaves.
func hlsClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
}

// getText fetches u, at most 16 MiB of it.
func getBody(ctx context.Context, c *http.Client, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, b, err
}

// viewHLS plays over HLS as a player starts: the multivariant playlist,
// its media playlist, the initialization section and the newest
// segment, which must hold fMP4 media (moof and mdat). A new muxer
// answers 404 until it has its first segments, so the playlists are
// asked again until then.
func viewHLS(ctx context.Context, s server, name string, hold time.Duration) (int64, error) {
	c := hlsClient()
	defer c.CloseIdleConnections()
	base, _ := url.Parse(s.httpURL + "/" + name + "/index.m3u8")
	playlist := func(u *url.URL, want string) (string, error) {
		for {
			code, b, err := getBody(ctx, c, u.String())
			if err == nil && code == http.StatusOK && strings.Contains(string(b), want) {
				return string(b), nil
			}
			if err == nil && code != http.StatusOK && code != http.StatusNotFound {
				return "", fmt.Errorf("GET %s: %d %s", u.Path, code, b)
			}
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("GET %s: %v (last %d %v)", u.Path, ctx.Err(), code, err)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	mv, err := playlist(base, "#EXT-X-STREAM-INF")
	if err != nil {
		return 0, err
	}
	mediaURL, err := base.Parse(firstURI(mv))
	if err != nil {
		return 0, err
	}
	mp, err := playlist(mediaURL, "#EXTINF")
	if err != nil {
		return 0, err
	}
	var initURI, segURI string
	for line := range strings.SplitSeq(mp, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, `#EXT-X-MAP:URI="`); ok {
			initURI, _, _ = strings.Cut(rest, `"`)
		} else if line != "" && !strings.HasPrefix(line, "#") {
			segURI = line
		}
	}
	if initURI == "" || segURI == "" {
		return 0, fmt.Errorf("media playlist without a map or a segment:\n%s", mp)
	}
	var got int64
	for _, f := range []struct{ uri, box string }{{initURI, "moov"}, {segURI, "mdat"}} {
		u, err := mediaURL.Parse(f.uri)
		if err != nil {
			return got, err
		}
		code, b, err := getBody(ctx, c, u.String())
		if err != nil || code != http.StatusOK || !bytes.Contains(b, []byte(f.box)) {
			return got, fmt.Errorf("GET %s: %d, %d bytes without %s, %v", u.Path, code, len(b), f.box, err)
		}
		got += int64(len(b))
	}
	select { // a player watching the segment
	case <-ctx.Done():
	case <-time.After(hold):
	}
	return got, nil
}

// firstURI returns a playlist's first line that is not a tag.
func firstURI(body string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	return ""
}

// errEnough ends a demuxer once the viewer has had enough.
var errEnough = errors.New("enough")

// tsCounter counts the video frames an SRT viewer demuxes.
type tsCounter struct{ h *holding }

func (w tsCounter) WritePacket(p *media.Packet) error {
	if p.Kind == media.KindVideo && !p.SeqHeader && w.h.frame() {
		return errEnough
	}
	return nil
}

// viewSRT plays over SRT (caller mode, stream ID read:APP/STREAM) and
// demuxes the MPEG-TS it gets into frames.
func viewSRT(ctx context.Context, s server, name string, hold time.Duration) (int64, error) {
	cfg := gosrt.DefaultConfig()
	cfg.StreamId = "read:" + name
	cfg.ConnectionTimeout = 5 * time.Second
	cfg.PeerIdleTimeout = 10 * time.Second
	conn, err := gosrt.Dial("srt", s.srtAddr, cfg)
	if err != nil {
		return 0, err
	}
	defer srtconn.Close(conn)
	// gosrt's connections have no read deadlines: closing one ends a
	// pending read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	h := &holding{hold: hold}
	err = mpegts.Demux(conn, tsCounter{h}, func() {})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return h.result(err)
}

// whepClient signals WHEP sessions, one connection each.
var whepClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// viewWHEP plays over WebRTC with a pion client on loopback UDP: the
// offer is POSTed to the stream's WHEP URL, the H.264 RTP counted until
// a keyframe and minFrames packets more have come, and the session
// ended with a DELETE of its URL, as WHEP players leave.
func viewWHEP(ctx context.Context, s server, name string, hold time.Duration) (int64, error) {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(iface string) bool { return iface == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return 0, err
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return 0, err
	}
	var tracks sync.WaitGroup
	defer func() {
		pc.Close()
		tracks.Wait() // the readers end with the connection
	}()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return 0, err
		}
	}
	var video, keyframes atomic.Int64
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		tracks.Add(1)
		defer tracks.Done()
		isVideo := tr.Codec().MimeType == webrtc.MimeTypeH264
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if !isVideo {
				continue
			}
			// An IDR NAL unit, alone or in an FU-A or STAP-A packet.
			if pl := p.Payload; len(pl) > 1 && (pl[0]&0x1f == 5 || pl[0]&0x1f == 28 && pl[1]&0x1f == 5 || pl[0]&0x1f == 24) {
				keyframes.Add(1)
			}
			if keyframes.Load() > 0 {
				video.Add(1)
			}
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return 0, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return 0, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return 0, fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.httpURL+"/"+name+"/whep", strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := whepClient.Do(req)
	if err != nil {
		return 0, err
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	location := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || location == "" {
		return 0, fmt.Errorf("WHEP POST: %s %s", resp.Status, answer)
	}
	defer func() {
		// Leave as a WHEP player does, within its own deadline: the
		// cycle's may be over.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(dctx, http.MethodDelete, s.httpURL+location, nil)
		if resp, err := whepClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		return 0, err
	}
	h := &holding{hold: hold}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		h.frames = video.Load()
		if h.done() {
			return h.result(nil)
		}
		select {
		case <-ctx.Done():
			return h.result(fmt.Errorf("%w (%d keyframe packets, state %s)", ctx.Err(), keyframes.Load(), pc.ConnectionState()))
		case <-tick.C:
		}
	}
}

// apiClient is one REST client's visit: a keep-alive connection that
// lists the streams, reads the steady one, lists the nodes and scrapes
// the metrics, then closes.
func apiClient(ctx context.Context, s server, steady string) error {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, path := range []string{"/api/v1/streams", "/api/v1/streams/" + steady, "/api/v1/nodes", "/metrics"} {
		code, b, err := getBody(ctx, c, s.httpURL+path)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("GET %s: %d %v", path, code, err)
		}
		if path != "/api/v1/nodes" && !strings.Contains(string(b), steady) {
			return fmt.Errorf("GET %s does not name %s", path, steady)
		}
	}
	return nil
}

// socketIOClient is one Socket.IO client's visit, speaking Engine.IO 4
// over a WebSocket as socket.io-client does with transports
// ["websocket"]: it connects to the main namespace, gets hello (which
// must list the steady stream), joins the steady stream's room, gets its
// viewers event (which must count the steady viewers, at least want),
// and disconnects.
func socketIOClient(ctx context.Context, s server, steady string, want int) error {
	u := strings.Replace(s.httpURL, "http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
	c, resp, err := wsDialer.DialContext(ctx, u, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (%s)", err, resp.Status)
		}
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	send := func(msg string) error {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return c.WriteMessage(websocket.TextMessage, []byte(msg))
	}
	var hello, joined bool
	var got []string
	for !joined {
		_, b, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("hello %v, joined %v, after %q: %w", hello, joined, got, err)
		}
		msg := string(b)
		got = append(got, msg)
		switch {
		case strings.HasPrefix(msg, "0{"): // Engine.IO open
			if err := send("40"); err != nil {
				return err
			}
		case msg == "2": // Engine.IO ping
			if err := send("3"); err != nil {
				return err
			}
		case strings.HasPrefix(msg, "42["):
			var ev []json.RawMessage
			if err := json.Unmarshal(b[2:], &ev); err != nil || len(ev) < 2 {
				return fmt.Errorf("event %q: %v", msg, err)
			}
			var name string
			json.Unmarshal(ev[0], &name)
			switch name {
			case "hello":
				var h struct {
					Streams []string `json:"streams"`
				}
				json.Unmarshal(ev[1], &h)
				if !strings.Contains(strings.Join(h.Streams, " "), steady) {
					return fmt.Errorf("hello without %s: %s", steady, ev[1])
				}
				hello = true
				if err := send(`42["join",` + fmt.Sprintf("%q", steady) + `]`); err != nil {
					return err
				}
			case "viewers":
				var v struct {
					Stream string `json:"stream"`
					Total  int    `json:"total"`
				}
				json.Unmarshal(ev[1], &v)
				if v.Stream == steady {
					if v.Total < want {
						return fmt.Errorf("viewers of %s: %s, want %d or more", steady, ev[1], want)
					}
					joined = true
				}
			}
		}
	}
	// Disconnect from the namespace, then close the WebSocket politely.
	if err := send("41"); err != nil {
		return err
	}
	return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
}
