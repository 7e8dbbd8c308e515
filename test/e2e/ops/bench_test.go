//go:build unix

package ops

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/bench"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestBenchCommand runs "meshcast bench" against a meshcast built with
// -tags ttfftrace, over RTMP and HTTP-FLV: every player joins and gets
// every frame, and the first pictures the players record (--first-frames)
// match, connection by connection, what the server recorded of the same
// plays (bench/ttff-split.sh).
func TestBenchCommand(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	dir := t.TempDir()
	traced := filepath.Join(dir, "meshcast-ttfftrace")
	if out, err := exec.Command("go", "build", "-tags", "ttfftrace", "-o", traced, "github.com/meshcast/meshcast/cmd/meshcast").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags ttfftrace: %v\n%s", err, out)
	}
	serverFile := filepath.Join(dir, "server.txt")
	p := e2eutil.StartBinary(t, traced, []string{"MESHCAST_FIRST_PICTURES=" + serverFile}, testutil.FreePort(t), testutil.FreePort(t))
	src := e2eutil.SmallFLV(t)
	const viewers = 20
	publish := fmt.Sprintf("rtmp://127.0.0.1:%d/live/bench", p.RTMPPort)
	for _, play := range []string{publish, p.HTTPURL + "/live/bench.flv"} {
		players := filepath.Join(dir, "players.txt")
		out, err := exec.Command(e2eutil.MeshcastBinary(t), "bench", "--input", src, "--publish", publish, "--play", play,
			"--viewers", strconv.Itoa(viewers), "--warmup", "1s", "--hold", "2s",
			"--pid", strconv.Itoa(p.Cmd.Process.Pid), "--quiet", "--first-frames", players).Output()
		if err != nil {
			t.Fatalf("bench %s: %v", play, err)
		}
		var res bench.Result
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("bench %s printed %q: %v", play, out, err)
		}
		if res.Connected != viewers || res.DeliveredPct < 99 || res.TTFFp99 > 5000 || res.LatencyP99 <= 0 || res.ServerCPUPct <= 0 || res.ServerRSS <= 0 {
			t.Errorf("bench %s: %+v", play, res)
		}
		firsts := readFields(t, players, 3)
		if len(firsts) != viewers {
			t.Errorf("bench %s: %d first pictures recorded, want %d", play, len(firsts), viewers)
		}
		for addr, f := range firsts {
			if d := time.Duration(f[1] - f[0]); d < -time.Millisecond || d > 5*time.Second {
				t.Errorf("bench %s: player %s received its first picture %v after asking", play, addr, d)
			}
		}
		if res.Proto != "rtmp" {
			continue
		}
		// The server's record of the same plays: reached the socket, taken
		// up, answered with the first picture, in that order, and before
		// the player's kernel stamped it.
		plays := readFields(t, serverFile, 4)
		for addr, f := range firsts {
			s, ok := plays[addr]
			if !ok {
				t.Errorf("no server record of the play from %s", addr)
				continue
			}
			arrived, handled, written := s[0], s[1], s[2]
			if arrived < f[0]-int64(time.Millisecond) || arrived > handled || handled > written || written > f[1]+int64(time.Second) {
				t.Errorf("play from %s: player sent %d and received %d; server: arrived %d handled %d written %d", addr, f[0], f[1], arrived, handled, written)
			}
		}
	}
}

// readFields reads lines "ADDR N N ..." of want fields into a map by ADDR.
func readFields(t *testing.T, name string, want int) map[string][]int64 {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]int64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != want {
			t.Fatalf("%s: line %q has %d fields, want %d", name, line, len(f), want)
		}
		var v []int64
		for _, s := range f[1:] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("%s: line %q: %v", name, line, err)
			}
			v = append(v, n)
		}
		m[f[0]] = v
	}
	return m
}
