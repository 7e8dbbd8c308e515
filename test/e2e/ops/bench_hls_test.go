//go:build unix

package ops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/bench"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestBenchHLS runs "meshcast bench" with HLS players against a meshcast
// and, joining later, against a plain static file server holding copies of
// the same stream's files (as nginx serves them): every player joins and
// stays, gets the frames published in the window a segment or two later,
// and reports its requests and how far behind live it plays.
func TestBenchHLS(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	p := e2eutil.StartProcess(t)
	dir := t.TempDir()
	static := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer static.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go mirrorHLS(ctx, p.HTTPURL+"/live/hls/index.m3u8", filepath.Join(dir, "live", "hls"))

	const viewers = 5
	plays := []string{p.HTTPURL + "/live/hls/index.m3u8", static.URL + "/live/hls/index.m3u8"}
	// The static copy exists once meshcast has a playlist: its players join
	// later.
	results := runBench(t, "--publish", fmt.Sprintf("rtmp://127.0.0.1:%d/live/hls", p.RTMPPort), "--play", strings.Join(plays, ","),
		"--stagger", "6s", "--viewers", strconv.Itoa(viewers), "--warmup", "4s", "--hold", "4s", "--pid", strconv.Itoa(p.Cmd.Process.Pid))
	if len(results) != len(plays) {
		t.Fatalf("%d results, want %d", len(results), len(plays))
	}
	for i, res := range results {
		t.Run([]string{"meshcast", "static"}[i], func(t *testing.T) {
			checkPlayers(t, res, "hls", viewers)
			if res.Requests <= 0 || res.RequestsPerSec <= 0 || res.RequestP99 < 0 {
				t.Errorf("%d requests (%.1f/s), p99 %v ms: want requests measured", res.Requests, res.RequestsPerSec, res.RequestP99)
			}
			if res.BehindP50 <= 0 {
				t.Errorf("behind live p50 %v ms, want a measure", res.BehindP50)
			}
			if res.ReceivedBPS <= 0 {
				t.Errorf("received %d bit/s", res.ReceivedBPS)
			}
		})
	}
}

// TestBenchLLHLS runs "meshcast bench --protocol llhls" against a meshcast
// serving low-latency HLS: players follow the live edge part by part with
// blocking playlist reloads and preload hints, less than a few seconds
// behind, and each part comes soon after the server could close it.
func TestBenchLLHLS(t *testing.T) {
	testutil.Need(t, "ffmpeg")
	p := e2eutil.StartProcess(t, "--hls-low-latency")
	const viewers = 5
	results := runBench(t, "--publish", fmt.Sprintf("rtmp://127.0.0.1:%d/live/ll", p.RTMPPort), "--play", p.HTTPURL+"/live/ll/index.m3u8",
		"--protocol", "llhls", "--viewers", strconv.Itoa(viewers), "--warmup", "4s", "--hold", "4s", "--pid", strconv.Itoa(p.Cmd.Process.Pid))
	if len(results) != 1 {
		t.Fatalf("%d results, want 1", len(results))
	}
	res := results[0]
	checkPlayers(t, res, "llhls", viewers)
	if res.Requests <= 0 {
		t.Errorf("no requests measured")
	}
	// Quantiles are whole milliseconds: a part can come within one.
	if res.PartP99 <= 0 || res.PartP50 >= 1000 {
		t.Errorf("part delivery p50 %v ms, p99 %v ms: want measures, p50 under 1000", res.PartP50, res.PartP99)
	}
	if res.BehindP50 <= 0 || res.BehindP50 >= 3000 {
		t.Errorf("behind live p50 %v ms, want between 0 and 3000", res.BehindP50)
	}
}

// runBench runs meshcast bench on the small clip with args and returns its
// results.
func runBench(t *testing.T, args ...string) []bench.Result {
	t.Helper()
	args = append([]string{"bench", "--input", e2eutil.SmallFLV(t), "--quiet"}, args...)
	out, err := exec.Command(e2eutil.MeshcastBinary(t), args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("bench: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("bench: %v", err)
	}
	t.Logf("%s", out)
	var results []bench.Result
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var res bench.Result
		if err := dec.Decode(&res); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("bench printed %q: %v", out, err)
		}
		results = append(results, res)
	}
	return results
}

// checkPlayers checks what every HLS result shows: the protocol, every
// player joined and stayed, and got the frames sent in the window.
func checkPlayers(t *testing.T, res bench.Result, proto string, viewers int) {
	t.Helper()
	if res.Proto != proto {
		t.Errorf("proto %q, want %q", res.Proto, proto)
	}
	if res.Connected != viewers || res.ConnectErrors != 0 || res.Dropped != 0 {
		t.Errorf("%d of %d viewers connected, %d failed to, %d dropped (%q %q)",
			res.Connected, viewers, res.ConnectErrors, res.Dropped, res.FirstConnectErrMsg, res.FirstDropMsg)
	}
	if res.DeliveredPct < 80 {
		t.Errorf("%.1f%% of the frames delivered, want 80%% or more", res.DeliveredPct)
	}
	if res.TTFFp99 <= 0 {
		t.Errorf("time to first frame p99 %v ms, want a measure", res.TTFFp99)
	}
}

// playlistURI finds the URIs of playlist tags (EXT-X-MEDIA, EXT-X-MAP).
var playlistURI = regexp.MustCompile(`URI="([^"]+)"`)

// mirrorHLS copies an HLS stream's files into dir until ctx ends, as a
// packager writing to a web server's directory does: media first, then the
// media playlists (renamed into place), then the multivariant playlist
// once.
func mirrorHLS(ctx context.Context, index, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(u string) ([]byte, bool) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return b, err == nil && resp.StatusCode == http.StatusOK
	}
	put := func(name string, b []byte) {
		tmp := filepath.Join(dir, "."+name)
		if os.WriteFile(tmp, b, 0o644) == nil {
			os.Rename(tmp, filepath.Join(dir, name))
		}
	}
	base, _ := url.Parse(index)
	at := func(ref string) string {
		u, err := base.Parse(ref)
		if err != nil {
			return ""
		}
		return u.String()
	}
	for ctx.Err() == nil {
		if body, ok := get(index); ok {
			ready := true
			for _, m := range refs(body) {
				pl, ok := get(at(m))
				for _, f := range refs(pl) {
					name := path.Base(f)
					if _, err := os.Stat(filepath.Join(dir, name)); err == nil || !ok {
						continue
					}
					b, got := get(at(f))
					if !got {
						ok = false
						break
					}
					put(name, b)
				}
				if ok {
					put(path.Base(m), pl)
				}
				if _, err := os.Stat(filepath.Join(dir, path.Base(m))); err != nil {
					ready = false
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "index.m3u8")); err != nil && ready {
				put("index.m3u8", body)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// refs lists the files a playlist names: URI lines and URI attributes,
// except gap segments and LL-HLS parts.
func refs(pl []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(pl))
	gap := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case line == "#EXT-X-GAP":
			gap = true
		case strings.HasPrefix(line, "#EXT-X-MEDIA:"), strings.HasPrefix(line, "#EXT-X-MAP:"):
			if m := playlistURI.FindStringSubmatch(line); m != nil {
				out = append(out, m[1])
			}
		case line[0] == '#':
		case gap:
			gap = false
		default:
			out = append(out, line)
		}
	}
	return out
}
