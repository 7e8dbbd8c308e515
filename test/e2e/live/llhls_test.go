//go:build unix

package live

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/config"
	mcwebrtc "github.com/meshcast/meshcast/internal/server/webrtc"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

var (
	mediaSeqRe = regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:(\d+)`)
	videoURIRe = regexp.MustCompile(`(?m)^(video\d*_stream\.m3u8)`)
)

// nextPart reads a low-latency media playlist: the media sequence number
// of the segment in progress and how many of its parts are listed.
func nextPart(playlist string) (msn, part int) {
	m := mediaSeqRe.FindStringSubmatch(playlist)
	if m == nil {
		return -1, -1
	}
	seq, _ := strconv.Atoi(m[1])
	segments, parts := 0, 0
	for _, ln := range strings.Split(playlist, "\n") {
		switch {
		case strings.HasPrefix(ln, "#EXT-X-PART:"):
			parts++
		case ln != "" && !strings.HasPrefix(ln, "#"):
			segments++
			parts = 0
		}
	}
	return seq + segments, parts
}

// TestLowLatencyHLS: with --hls-low-latency the media playlist carries
// partial segments, a preload hint and CAN-BLOCK-RELOAD, and a request for
// the next part blocks until it exists.
func TestLowLatencyHLS(t *testing.T) {
	n := e2eutil.StartNode(t, func(c *config.Config) { c.HLSLowLatency = true })
	const name = "live/ll"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	var uri string
	testutil.WaitFor(t, 20*time.Second, "the multivariant playlist", func() bool {
		code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/"+name+"/index.m3u8")
		if m := videoURIRe.FindStringSubmatch(string(body)); code == 200 && m != nil {
			uri = m[1]
			return true
		}
		return false
	})
	url := n.HTTPURL + "/" + name + "/" + uri
	code, body := e2eutil.HTTPGet(t, url)
	pl := string(body)
	for _, tag := range []string{"#EXT-X-PART-INF:PART-TARGET=", "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:TYPE=PART"} {
		if code != 200 || !strings.Contains(pl, tag) {
			t.Errorf("media playlist lacks %s:\n%s", tag, pl)
		}
	}
	for i := 0; i < 3; i++ {
		_, body := e2eutil.HTTPGet(t, url)
		msn, part := nextPart(string(body))
		start := time.Now()
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", url, msn, part))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		buf := make([]byte, 64<<10)
		for {
			k, err := resp.Body.Read(buf)
			b.Write(buf[:k])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		waited := time.Since(start)
		gotMSN, gotPart := nextPart(b.String())
		t.Logf("asked for part %d.%d: answered after %v with %d.%d next", msn, part, waited.Round(time.Millisecond), gotMSN, gotPart)
		if resp.StatusCode != 200 || gotMSN*1000+gotPart <= msn*1000+part {
			t.Errorf("blocking reload for %d.%d: %d, playlist ends before it:\n%s", msn, part, resp.StatusCode, b.String())
		}
		if waited > 3*time.Second {
			t.Errorf("blocking reload for the next part took %v", waited)
		}
	}
}

// TestLowLatencyHLSInBrowser plays low-latency HLS in Chromium through
// hls.js and reports its live-edge latency (recorded in BENCHMARKS.md; not
// asserted: a timed test on a shared machine would be flaky).
func TestLowLatencyHLSInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser measurement: skipped with -short")
	}
	e2eutil.NeedDashboard(t)
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.HLSLowLatency = true
		c.WebModules = e2eutil.RepoRoot(t) + "/node_modules"
	})
	const name = "live/llweb"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	testutil.WaitFor(t, 15*time.Second, "the stream", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(n.HTTPURL + "/api/v1/streams/" + name)
		return code == 200
	})
	res := e2eutil.Dashboard(t, nil, "latency", n.HTTPURL, name, "15")
	t.Logf("hls.js live-edge latency over 15 s: median %.2f s, p90 %.2f s, max %.2f s (%v samples, parts seen: %v)",
		res["median"], res["p90"], res["max"], res["samples"], res["ll"])
	if res["ll"] != true {
		t.Error("hls.js did not see partial segments")
	}
	if f, _ := res["frames"].(float64); f <= 30 {
		t.Errorf("%v frames decoded", f)
	}
}

// TestEdgeProtocols: a stream published on one node plays on another over
// low-latency HLS, WebSocket-FLV and SRT, the edge making each from the
// relayed stream.
func TestEdgeProtocols(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	nodes := e2eutil.StartClusterNodes(t, func(c *config.Config) { c.HLSLowLatency = true }, "edge-origin", "edge-b")
	origin, edge := nodes[0], nodes[1]
	const name = "live/edgy"
	e2eutil.PublishFFmpegLoop(t, origin.RTMPURL(name))
	testutil.WaitFor(t, 15*time.Second, "the stream on the origin", func() bool {
		code, _ := e2eutil.HTTPGetQuiet(origin.HTTPURL + "/api/v1/streams/" + name)
		return code == 200
	})
	// LL-HLS from the edge.
	var uri string
	testutil.WaitFor(t, 20*time.Second, "the edge's multivariant playlist", func() bool {
		code, body := e2eutil.HTTPGet(t, edge.HTTPURL+"/"+name+"/index.m3u8")
		if m := videoURIRe.FindStringSubmatch(string(body)); code == 200 && m != nil {
			uri = m[1]
			return true
		}
		return false
	})
	if code, body := e2eutil.HTTPGet(t, edge.HTTPURL+"/"+name+"/"+uri); code != 200 || !strings.Contains(string(body), "#EXT-X-PART:") {
		t.Errorf("edge media playlist: %d\n%s", code, body)
	}
	// WebSocket-FLV and SRT from the edge.
	ws := strings.Replace(edge.HTTPURL, "http://", "ws://", 1) + "/" + name + ".flv"
	conn, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatalf("%s: %v", ws, err)
	}
	checkWSFLV(t, conn, 30)
	conn.Close()
	srt := fmt.Sprintf("srt://127.0.0.1:%d?streamid=read:%s", edge.SRTAddr().(*net.UDPAddr).Port, name)
	if w, h, err := e2eutil.VideoSize(srt); err != nil || w != 640 || h != 360 {
		t.Errorf("%s: %dx%d %v", srt, w, h, err)
	}
	// WebRTC (WHEP) from the edge: H.264, and the AAC as Opus, transcoded
	// on the edge.
	v := e2eutil.PlayWHEP(t, edge.HTTPURL, name, true)
	testutil.WaitFor(t, 20*time.Second, "H.264 and Opus RTP from the edge", func() bool {
		return v.Video.Load() >= 100 && v.Keyframes.Load() > 0 && v.Opus.Load() >= 60
	})
	if v.Audio != mcwebrtc.AudioOpus || !v.Received(webrtc.MimeTypeH264) || !v.Received(webrtc.MimeTypeOpus) {
		t.Errorf("edge WHEP: audio %q, tracks %v; want H.264 and Opus", v.Audio, v.Mimes)
	}
	t.Logf("edge WHEP: first Opus packet %v after the answer", v.AudioLatency().Round(time.Millisecond))
	code, body := e2eutil.HTTPGet(t, edge.HTTPURL+"/api/v1/streams/"+name)
	if code != 200 || !strings.Contains(string(body), "edge-origin") {
		t.Errorf("edge's view of the stream: %d %s", code, body)
	}
}
