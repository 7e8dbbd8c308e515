//go:build unix

package security

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshcast/meshcast/internal/bench"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestAudienceBehindOneAddress is a popular stream watched from behind one
// address, as a carrier-grade NAT or a campus presents its users: against
// a node with default settings, 2000 RTMP players (meshcast bench, joining
// at once) and 300 HTTP-FLV players of one stream, all from 127.0.0.1, all
// play. Meanwhile 2000 idle sockets from the same address are capped at
// --max-connections-per-ip (256) and those left are closed by the
// handshake timeout, while the healthy viewer and every player go on.
func TestAudienceBehindOneAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	testutil.Need(t, "ffmpeg")
	const (
		rtmpPlayers = 2000
		flvPlayers  = 300
		idle        = 2000
		perIP       = 256              // --max-connections-per-ip's default
		handshake   = 10 * time.Second // --handshake-timeout's default
		grace       = 2 * time.Second  // a waiting connection counts after this
	)
	files := uint64(flvPlayers + idle + 500)
	needFiles(t, files)
	e := startHostile(t) // default settings
	if lim := fileLimit(t, e.p.Cmd.Process.Pid); lim < rtmpPlayers+flvPlayers+idle+500 {
		t.Skipf("the server may open %d files, needs %d", lim, rtmpPlayers+flvPlayers+idle+500)
	}
	const name = "live/crowd"
	publish := fmt.Sprintf("rtmp://127.0.0.1:%d/%s", e.p.RTMPPort, name)

	// 2000 RTMP players, from meshcast bench: it publishes the stream,
	// joins them at once and measures what they receive.
	var out, stderr bytes.Buffer
	cmd := exec.Command(e2eutil.MeshcastBinary(t), "bench", "--input", e2eutil.SmallFLV(t), "--publish", publish,
		"--viewers", fmt.Sprint(rtmpPlayers), "--warmup", "2s", "--hold", "40s", "--quiet")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan struct{})
	var benchErr error
	go func() { benchErr = cmd.Wait(); close(benchDone) }()
	t.Cleanup(func() {
		select {
		case <-benchDone:
		default:
			cmd.Process.Kill()
			<-benchDone
		}
	})
	viewers := func(proto string) float64 {
		return e.metric(t, fmt.Sprintf(`meshcast_stream_viewers{protocol=%q,stream=%q}`, proto, name))
	}
	testutil.WaitFor(t, 60*time.Second, "2000 RTMP players", func() bool {
		select {
		case <-benchDone:
			t.Fatalf("bench ended early: %v\n%s", benchErr, stderr.String())
		default:
		}
		return viewers("rtmp") >= rtmpPlayers
	})

	// 300 HTTP-FLV players of the same stream, from the same address.
	players := make([]*flvPlayer, flvPlayers)
	var wg sync.WaitGroup
	errs := make(chan error, flvPlayers)
	for i := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := playFLVFrom(nil, e.p.HTTPURL+"/"+name+".flv")
			if err != nil {
				errs <- fmt.Errorf("HTTP-FLV player %d: %w", i, err)
				return
			}
			players[i] = p
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range players {
			p.close()
		}
	})
	if err := waitAllFrames(players, 5, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := viewers("flv"); got != flvPlayers {
		t.Errorf("%v HTTP-FLV viewers counted, want %d", got, flvPlayers)
	}

	// 2000 idle sockets from the same address: those still waiting after
	// the grace, past the limit, are closed; the rest at the handshake
	// timeout.
	perIP0 := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="per_ip"}`)
	timeouts0 := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="handshake_timeout"}`)
	start := time.Now()
	lifetimes := make([]time.Duration, idle)
	var dialed sync.WaitGroup
	var dialErrs atomic.Int32
	sem := make(chan struct{}, 256)
	for i := range lifetimes {
		dialed.Add(1)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialFrom(net.IPv4(127, 0, 0, 1), e.p.RTMPAddr)
			<-sem
			dialed.Done()
			if err != nil {
				dialErrs.Add(1)
				return
			}
			defer c.Close()
			if closedBy(c, handshake+10*time.Second) != nil {
				lifetimes[i] = -1 // never closed
				return
			}
			lifetimes[i] = time.Since(start)
		}()
	}
	dialed.Wait()
	dialTime := time.Since(start)
	wg.Wait()
	if n := dialErrs.Load(); n > 0 {
		t.Fatalf("%d of %d idle sockets failed to connect", n, idle)
	}
	var capped, timedOut, open int
	for _, d := range lifetimes {
		switch {
		case d < 0:
			open++
		case d < handshake-time.Second:
			capped++
		default:
			timedOut++
		}
	}
	t.Logf("%d idle sockets dialled in %v: %d closed as they aged in or at once, %d by the handshake timeout, %d never",
		idle, dialTime.Round(time.Millisecond), capped, timedOut, open)
	if timedOut != perIP || capped != idle-perIP || open != 0 {
		t.Errorf("%d idle sockets lived to the handshake timeout and %d were cut short (%d never closed), want %d and %d",
			timedOut, capped, open, perIP, idle-perIP)
	}
	if got := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="per_ip"}`) - perIP0; got != idle-perIP {
		t.Errorf("%v per-address refusals counted, want %d", got, idle-perIP)
	}
	if got := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="handshake_timeout"}`) - timeouts0; got != perIP {
		t.Errorf("%v handshake timeouts counted, want %d", got, perIP)
	}

	// Every player played on through it all.
	e.healthy(t)
	if err := waitAllFrames(players, 5, 20*time.Second); err != nil {
		t.Errorf("after the idle sockets: %v", err)
	}
	if got := viewers("rtmp"); got != rtmpPlayers {
		t.Errorf("%v RTMP viewers after the idle sockets, want %d", got, rtmpPlayers)
	}
	<-benchDone
	if benchErr != nil {
		t.Fatalf("bench: %v\n%s", benchErr, stderr.String())
	}
	var res bench.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bench printed %q: %v", out.String(), err)
	}
	t.Logf("bench: %d of %d players connected, %d dropped, %.1f%% of frames delivered, %d stalls, time to first frame p99 %.0f ms",
		res.Connected, res.Viewers, res.Dropped, res.DeliveredPct, res.Stalls, res.TTFFp99)
	if res.Connected != rtmpPlayers || res.ConnectErrors != 0 || res.Dropped != 0 || res.DeliveredPct < 95 {
		t.Errorf("bench: %d of %d players connected (%d errors: %s), %d dropped (%s), %.1f%% of frames delivered; want all playing to the end",
			res.Connected, rtmpPlayers, res.ConnectErrors, res.FirstConnectErrMsg, res.Dropped, res.FirstDropMsg, res.DeliveredPct)
	}
	if got := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="viewers_per_ip"}`); got != 0 {
		t.Errorf("%v players refused by --max-viewers-per-ip, which is off by default", got)
	}
}

// TestMaxViewersPerIP: with --max-viewers-per-ip 100, exactly 100 players
// from one address play, over RTMP and HTTP-FLV together; the 101st is
// refused with a reason over RTMP, HTTP-FLV, WebSocket-FLV and WHEP alike,
// another address plays, and a player that leaves frees its place.
func TestMaxViewersPerIP(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	const max = 100
	e := startHostile(t, "--max-viewers-per-ip", fmt.Sprint(max))
	ip := loopbackIP(70, 0)
	httpURL := func() string { return fmt.Sprintf("http://%s/live/stream.flv", e.httpAddr()) }
	var rtmpViewers []*e2eutil.RTMPViewer
	var flvViewers []*flvPlayer
	t.Cleanup(func() {
		for _, p := range flvViewers {
			p.close()
		}
	})
	for i := range max {
		if i%2 == 0 {
			v, err := playRTMPFrom(t, ip, e.p.RTMPAddr, "live/stream")
			if err != nil {
				t.Fatalf("RTMP player %d of %d from one address: %v", i+1, max, err)
			}
			rtmpViewers = append(rtmpViewers, v)
			continue
		}
		p, err := playFLVFrom(ip, httpURL())
		if err != nil {
			t.Fatalf("HTTP-FLV player %d of %d from one address: %v", i+1, max, err)
		}
		flvViewers = append(flvViewers, p)
	}
	// The 101st: refused over RTMP with a status, over HTTP-FLV with 429.
	_, err := playRTMPFrom(t, ip, e.p.RTMPAddr, "live/stream")
	if err == nil || !strings.Contains(err.Error(), "too many viewers from this address") {
		t.Fatalf("RTMP player %d from one address: %v, want refused", max+1, err)
	}
	if _, err := playFLVFrom(ip, httpURL()); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("HTTP-FLV player %d from one address: %v, want 429", max+1, err)
	}
	// WebSocket-FLV and WHEP are refused alike.
	from := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}).DialContext(ctx, network, addr)
	}
	ws := websocket.Dialer{NetDialContext: from, HandshakeTimeout: 10 * time.Second}
	if c, resp, err := ws.Dial("ws://"+e.httpAddr()+"/live/stream.flv", nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		if c != nil {
			c.Close()
		}
		t.Fatalf("WebSocket-FLV player %d from one address: %v, %v; want 429", max+1, resp, err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: from}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://"+e.httpAddr()+"/live/stream/whep", "application/sdp", strings.NewReader("v=0\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("WHEP offer %d from one address: %s, want 429", max+1, resp.Status)
	}
	// Another address plays; those admitted play on.
	e.playOn(t, loopbackIP(70, 1), rtmpViewers)
	if err := waitAllFrames(flvViewers, 5, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	for proto, want := range map[string]float64{"rtmp": 1, "flv": 1, "ws-flv": 1, "webrtc": 1} {
		if got := e.metric(t, fmt.Sprintf(`meshcast_connections_refused_total{protocol=%q,reason="viewers_per_ip"}`, proto)); got != want {
			t.Errorf("%s: %v refusals counted as viewers_per_ip, want %v", proto, got, want)
		}
	}
	if got := e.metric(t, `meshcast_connections_refused_total{protocol="rtmp",reason="per_ip"}`); got != 0 {
		t.Errorf("%v refused as waiting connections, want none", got)
	}
	// A player that leaves frees its place.
	rtmpViewers[0].Close()
	testutil.WaitFor(t, 10*time.Second, "a place to come free", func() bool {
		v, err := e2eutil.DialRTMPViewerFrom(ip, e.p.RTMPAddr, "live/stream")
		if err != nil {
			return false
		}
		t.Cleanup(v.Close)
		return true
	})
	e.healthy(t)
}

// flvPlayer is a Go HTTP-FLV player that counts the video frames it
// receives.
type flvPlayer struct {
	conn  net.Conn
	video atomic.Int64
	err   atomic.Value
	done  chan struct{}
}

// playFLVFrom plays an HTTP-FLV URL from the loopback address ip (nil:
// any): the response must be 200 with an FLV header.
func playFLVFrom(ip net.IP, url string) (*flvPlayer, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	if ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", req.URL.Host)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := func() (*http.Response, error) {
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		return http.ReadResponse(br, req)
	}()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		conn.Close()
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	r := flv.NewReader(resp.Body)
	if _, _, err := r.ReadHeader(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("FLV header: %w", err)
	}
	p := &flvPlayer{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			typ, _, body, err := r.ReadTag()
			if err != nil {
				p.err.Store(err)
				return
			}
			// A coded frame: AVC packet type 1, not a sequence header.
			if typ == 9 && len(body) > 1 && body[1] == 1 {
				p.video.Add(1)
			}
		}
	}()
	return p, nil
}

// waitAllFrames waits until every player has received n more video frames
// than it had when called.
func waitAllFrames(players []*flvPlayer, n int64, timeout time.Duration) error {
	start := make([]int64, len(players))
	for i, p := range players {
		start[i] = p.video.Load()
	}
	deadline := time.Now().Add(timeout)
	for i := 0; i < len(players); {
		p := players[i]
		if p.video.Load()-start[i] >= n {
			i++
			continue
		}
		if err, ok := p.err.Load().(error); ok {
			return fmt.Errorf("HTTP-FLV player %d: after %d frames: %w", i, p.video.Load(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("HTTP-FLV player %d: %d of %d more frames within %v", i, p.video.Load()-start[i], n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (p *flvPlayer) close() {
	if p != nil {
		p.conn.Close()
		<-p.done
	}
}
