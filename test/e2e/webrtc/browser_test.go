//go:build unix

package webrtc

import (
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestWHEPBrowser: headless Chromium plays a stream published with ffmpeg
// over WebRTC, signalled by WHEP, as the dashboard does: in 4 s it decodes
// at least 60 frames (2 s at 30 fps) of the source's width, and loses no
// packet on loopback.
func TestWHEPBrowser(t *testing.T) {
	testutil.Need(t, "node", "chromium", "ffmpeg", "ffprobe")
	e2eutil.NeedNodeModules(t, "playwright-core")
	n := e2eutil.StartNode(t, nil)
	const name = "live/browser"
	e2eutil.PublishFFmpegLoop(t, n.RTMPURL(name))
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, name)
	width, height, err := e2eutil.VideoSize(e2eutil.Input(t))
	if err != nil {
		t.Fatal(err)
	}

	js := e2eutil.StartJS(t, 90*time.Second, "whep.mjs", n.HTTPURL, name, "4")
	res := js.Next(t, "result", 80*time.Second)
	num := func(k string) float64 { v, _ := res[k].(float64); return v }
	t.Logf("Chromium: %v frames decoded (%v keyframes), first after %v ms, %vx%v, %v packets received, %v lost, %v NACKs, %v PLIs, jitter %v s; audio %q",
		res["framesDecoded"], res["keyFramesDecoded"], res["firstFrameMs"], res["frameWidth"], res["frameHeight"],
		res["packetsReceived"], res["packetsLost"], res["nackCount"], res["pliCount"], res["jitter"], res["audio"])
	if f := num("framesDecoded"); f < 60 {
		t.Errorf("Chromium decoded %v frames, want at least 60", f)
	}
	if w, h := num("frameWidth"), num("frameHeight"); int(w) != width || int(h) != height {
		t.Errorf("Chromium decoded %vx%v frames, want the source's %dx%d", w, h, width, height)
	}
	if lost := num("packetsLost"); lost != 0 {
		t.Errorf("Chromium lost %v packets on loopback, want none", lost)
	}
}
