//go:build unix

package ops

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"testing"

	"github.com/meshcast/meshcast/internal/bench"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestBenchWHEPAndSRT runs "meshcast bench" with WHEP viewers (pion peer
// connections on loopback, signalled by WHEP) and SRT readers against a
// meshcast: every viewer connects, gets the frames published in the
// window, and measures their latency, its first picture, and the packets
// it expected and lost.
func TestBenchWHEPAndSRT(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	p := e2eutil.StartProcess(t)
	src := e2eutil.SmallFLV(t)
	const viewers = 5
	for _, c := range []struct{ proto, publish, play string }{
		{"whep", "live/whep", p.HTTPURL + "/live/whep/whep"},
		{"srt", "live/srt", fmt.Sprintf("srt://127.0.0.1:%d?streamid=read:live/srt", p.SRTPort(t))},
	} {
		t.Run(c.proto, func(t *testing.T) {
			publish := fmt.Sprintf("rtmp://127.0.0.1:%d/%s", p.RTMPPort, c.publish)
			cmd := exec.Command(e2eutil.MeshcastBinary(t), "bench", "--input", src, "--publish", publish, "--play", c.play,
				"--viewers", strconv.Itoa(viewers), "--warmup", "1s", "--hold", "2s",
				"--pid", strconv.Itoa(p.Cmd.Process.Pid), "--quiet")
			out, err := cmd.Output()
			if err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					t.Fatalf("bench %s: %v\n%s", c.play, err, ee.Stderr)
				}
				t.Fatalf("bench %s: %v", c.play, err)
			}
			var res bench.Result
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("bench %s printed %q: %v", c.play, out, err)
			}
			t.Logf("%s", out)
			if res.Proto != c.proto {
				t.Errorf("proto %q, want %q", res.Proto, c.proto)
			}
			if res.Connected != viewers || res.ConnectErrors != 0 || res.Dropped != 0 {
				t.Errorf("%d of %d viewers connected, %d failed to, %d dropped (%q %q)",
					res.Connected, viewers, res.ConnectErrors, res.Dropped, res.FirstConnectErrMsg, res.FirstDropMsg)
			}
			if res.DeliveredPct < 95 {
				t.Errorf("%.1f%% of the frames delivered, want 95%% or more", res.DeliveredPct)
			}
			// The quantiles are whole milliseconds, -1 with no samples: a
			// frame's trip through a server on loopback can take less than
			// one.
			if res.LatencyP99 < 0 {
				t.Errorf("no frame's latency measured")
			}
			if res.TTFFp99 <= 0 {
				t.Errorf("time to first frame p99 %v ms, want a measure", res.TTFFp99)
			}
			if res.PacketsExpected <= 0 || res.LossPct >= 5 {
				t.Errorf("%d packets expected, %d lost (%.1f%%): want some expected and under 5%% lost", res.PacketsExpected, res.PacketsLost, res.LossPct)
			}
			if res.ReceivedBPS <= 0 {
				t.Errorf("received %d bit/s", res.ReceivedBPS)
			}
		})
	}
}
