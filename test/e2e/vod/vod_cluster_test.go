//go:build unix

package vod

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// vodClip encodes a secs-second H.264/AAC MP4 of the given size with
// ffmpeg and returns its path.
func vodClip(t *testing.T, secs int, size string) string {
	t.Helper()
	testutil.Need(t, "ffmpeg")
	p := filepath.Join(t.TempDir(), "clip.mp4")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(secs), "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	return p
}

// rendezvousRank orders node IDs for an asset name as meshcast does:
// highest cluster.RendezvousHash of the ID and the name first.
func rendezvousRank(name string, ids ...string) []string {
	score := func(id string) uint64 { return cluster.RendezvousHash(cluster.NodeID(id), name) }
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b string) int {
		if score(a) > score(b) {
			return -1
		}
		return 1
	})
	return out
}

// nameRanked finds an asset name whose ranking over ids is want.
func nameRanked(t *testing.T, prefix string, ids []string, want func(rank []string) bool) string {
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("%s%d", prefix, i)
		if want(rendezvousRank(name, ids...)) {
			return name
		}
	}
	t.Fatal("no name ranks the nodes as wanted")
	return ""
}

// upload PUTs the file at path as /api/v1/vod/FILE and returns the
// response's status and body.
func upload(t *testing.T, httpURL, file, path string) (int, []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return uploadBody(t, httpURL, file, f)
}

func uploadBody(t *testing.T, httpURL, file string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("PUT", httpURL+"/api/v1/vod/"+file, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", file, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// metric reads one series from a node's /metrics, 0 when absent.
func metric(t *testing.T, httpURL, series string) float64 {
	t.Helper()
	return e2eutil.ScrapeMetrics(t, httpURL).Samples[series]
}

// metricQuiet is metric for goroutines other than the test's.
func metricQuiet(httpURL, series string) (float64, bool) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(httpURL + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false
	}
	sc, err := e2eutil.ParseMetrics(string(b))
	if err != nil {
		return 0, false
	}
	v, ok := sc.Samples[series]
	return v, ok
}

const (
	segmentsFromStorage = `meshcast_vod_responses_total{from="storage",kind="segment"}`
	vodFetches          = `meshcast_cache_fetches_total{cache="vod"}`
)

// segmentURIs returns the segment URIs of an on-demand playlist.
func segmentURIs(t *testing.T, httpURL, name string) []string {
	t.Helper()
	code, body := e2eutil.HTTPGet(t, httpURL+"/vod/"+name+"/index.m3u8")
	if code != 200 {
		t.Fatalf("GET /vod/%s/index.m3u8 from %s: %d %s", name, httpURL, code, body)
	}
	var uris []string
	for _, ln := range strings.Split(string(body), "\n") {
		if ln != "" && ln[0] != '#' {
			uris = append(uris, ln)
		}
	}
	return uris
}

func TestVODCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	red := testutil.StartRedis(t, 0)
	ids := []string{"vod-a", "vod-b", "vod-c"}
	dirs := map[string]string{}
	nodes := map[string]*e2eutil.Proc{}
	for _, id := range ids {
		dirs[id] = t.TempDir()
		nodes[id] = e2eutil.StartProcess(t, "--redis", red.URL(), "--cluster-secret", "cluster-secret-of-the-tests",
			"--node-id", id, "--advertise-host", "127.0.0.1", "--vod-dir", dirs[id], "--vod-replicas", "2",
			"--cache-size", "12MiB")
	}
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(nodes["vod-a"].HTTPURL)) == 3 })

	// An asset owned by A and B, uploaded to A: C holds no copy.
	name := nameRanked(t, "film", ids, func(r []string) bool { return r[2] == "vod-c" })
	owners := rendezvousRank(name, ids...)[:2]
	src := vodClip(t, 12, "640x360")
	srcDur := durationOf(t, src)
	code, body := upload(t, nodes["vod-a"].HTTPURL, name+".mp4", src)
	var up struct {
		Version string   `json:"version"`
		Copies  []string `json:"copies"`
	}
	if json.Unmarshal(body, &up) != nil || code != http.StatusCreated || !slices.Equal(up.Copies, owners) {
		t.Fatalf("upload: %d %s; want 201 with copies on %v", code, body, owners)
	}
	for id, dir := range dirs {
		_, err := os.Stat(filepath.Join(dir, name+".mp4"))
		if held := err == nil; held != (id != "vod-c") {
			t.Errorf("%s holds a copy: %v", id, held)
		}
	}
	c := nodes["vod-c"]

	t.Run("200 concurrent misses on a non-owner: one upstream fetch", func(t *testing.T) {
		uris := segmentURIs(t, c.HTTPURL, name)
		if len(uris) < 3 {
			t.Fatalf("segments %v", uris)
		}
		storage := func() float64 {
			return metric(t, nodes["vod-a"].HTTPURL, segmentsFromStorage) + metric(t, nodes["vod-b"].HTTPURL, segmentsFromStorage)
		}
		fromStorage, fetches := storage(), metric(t, c.HTTPURL, vodFetches)
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
		defer client.CloseIdleConnections()
		start := make(chan struct{})
		bodies := make([][]byte, 200)
		var wg sync.WaitGroup
		for i := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, err := client.Get(c.HTTPURL + "/vod/" + name + "/" + uris[1])
				if err != nil {
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode == 200 {
					bodies[i], _ = io.ReadAll(resp.Body)
				}
			}()
		}
		close(start)
		wg.Wait()
		for i, b := range bodies {
			if len(b) < 188 || b[0] != 0x47 || !bytes.Equal(b, bodies[0]) {
				t.Fatalf("request %d: %d bytes, not the segment every other request got", i, len(b))
			}
		}
		if got := storage() - fromStorage; got != 1 {
			t.Errorf("the owners made the segment %v times for 200 requests, want 1", got)
		}
		if got := metric(t, c.HTTPURL, vodFetches) - fetches; got != 1 {
			t.Errorf("C fetched %v times for 200 requests, want 1", got)
		}
	})

	t.Run("plays from the owners", func(t *testing.T) {
		for _, id := range owners {
			u := nodes[id].HTTPURL + "/vod/" + name
			if d := durationOf(t, u+"/index.m3u8"); d < srcDur-1 || d > srcDur+1 {
				t.Errorf("%s HLS: %.2fs, source %.2fs", id, d, srcDur)
			}
			if d := durationOf(t, u+".mp4"); d < srcDur-1 || d > srcDur+1 {
				t.Errorf("%s MP4: %.2fs, source %.2fs", id, d, srcDur)
			}
		}
	})

	t.Run("a load larger than the cache stays within its bound", func(t *testing.T) {
		big := e2eutil.Input(t) // 60 s: more than C's 12 MiB cache
		info, _ := os.Stat(big)
		if info.Size() < 12<<20+2<<20 {
			t.Fatalf("input of %d bytes is too small to overflow the cache", info.Size())
		}
		bigName := nameRanked(t, "big", ids, func(r []string) bool { return r[2] == "vod-c" })
		if code, body := upload(t, nodes["vod-a"].HTTPURL, bigName+".mp4", big); code != http.StatusCreated {
			t.Fatalf("upload: %d %s", code, body)
		}
		bound := metric(t, c.HTTPURL, `meshcast_cache_max_bytes{cache="vod"}`)
		if bound != 12<<20 {
			t.Fatalf("cache bound %v, want 12 MiB", bound)
		}
		done := make(chan struct{})
		peak := 0.0
		var sampler sync.WaitGroup
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if v, ok := metricQuiet(c.HTTPURL, `meshcast_cache_bytes{cache="vod"}`); ok {
					peak = max(peak, v)
				}
			}
		}()
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Get(c.HTTPURL + "/vod/" + bigName + ".mp4")
		var n int64
		if err == nil {
			n, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		close(done)
		sampler.Wait()
		if err != nil || resp.StatusCode != 200 || n != info.Size() {
			t.Fatalf("GET big.mp4 from C: %v, %d bytes of %d", err, n, info.Size())
		}
		after := metric(t, c.HTTPURL, `meshcast_cache_bytes{cache="vod"}`)
		evicted := metric(t, c.HTTPURL, `meshcast_cache_evictions_total{cache="vod"}`)
		t.Logf("cache: peak %.0f bytes, now %.0f, bound %.0f, %v evictions", peak, after, bound, evicted)
		if peak > bound || after > bound || evicted == 0 || after == 0 {
			t.Errorf("cache went to %.0f bytes (now %.0f) with bound %.0f, %v evictions", peak, after, bound, evicted)
		}
	})
	t.Run("an owner dies: a non-owner plays from the replica", func(t *testing.T) {
		nodes[owners[0]].Kill(t)
		u := c.HTTPURL + "/vod/" + name
		if d := durationOf(t, u+"/index.m3u8"); d < srcDur-1 || d > srcDur+1 {
			t.Errorf("C HLS: %.2fs, source %.2fs", d, srcDur)
		}
		e2eutil.ProbeCodecs(t, u+"/index.m3u8")
		if d := durationOf(t, u+".mp4"); d < srcDur-1 || d > srcDur+1 {
			t.Errorf("C MP4: %.2fs, source %.2fs", d, srcDur)
		}
	})

}

func TestVODSharedCache(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	testutil.Need(t, "redis-server", "memcached", "ffmpeg", "ffprobe")
	src := vodClip(t, 8, "320x240") // small segments: memcached keeps values up to 1 MB
	for _, kind := range []string{"redis", "memcached"} {
		t.Run(kind, func(t *testing.T) {
			var l2 string
			if kind == "redis" {
				l2 = testutil.StartRedis(t, 0).URL()
			} else {
				l2 = "memcached://" + testutil.StartMemcached(t, 0).Addr()
			}
			reg := testutil.StartRedis(t, 0)
			ids := []string{"l2-o", "l2-b", "l2-c"}
			nodes := map[string]*e2eutil.Proc{}
			for _, id := range ids {
				nodes[id] = e2eutil.StartProcess(t, "--redis", reg.URL(), "--cluster-secret", "cluster-secret-of-the-tests",
					"--node-id", id, "--advertise-host", "127.0.0.1", "--vod-dir", t.TempDir(), "--vod-replicas", "1",
					"--cache-l2", l2)
			}
			testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(nodes["l2-b"].HTTPURL)) == 3 })
			name := nameRanked(t, "shared", ids, func(r []string) bool { return r[0] == "l2-o" })
			if code, body := upload(t, nodes["l2-o"].HTTPURL, name+".mp4", src); code != http.StatusCreated {
				t.Fatalf("upload: %d %s", code, body)
			}
			// B fetches from the owner and fills the shared cache.
			uris := segmentURIs(t, nodes["l2-b"].HTTPURL, name)
			code, seg := e2eutil.HTTPGet(t, nodes["l2-b"].HTTPURL+"/vod/"+name+"/"+uris[0])
			if code != 200 || len(seg) < 188 {
				t.Fatalf("segment from B: %d, %d bytes", code, len(seg))
			}
			// With the owner gone, C serves the same from the shared cache.
			nodes["l2-o"].Kill(t)
			if got := segmentURIs(t, nodes["l2-c"].HTTPURL, name); !slices.Equal(got, uris) {
				t.Errorf("playlist from C %v, from B %v", got, uris)
			}
			code, got := e2eutil.HTTPGet(t, nodes["l2-c"].HTTPURL+"/vod/"+name+"/"+uris[0])
			if code != 200 || !bytes.Equal(got, seg) {
				t.Errorf("segment from C without the owner: %d, %d bytes, want the %d bytes B served", code, len(got), len(seg))
			}
			if hits := metric(t, nodes["l2-c"].HTTPURL, `meshcast_cache_l2_hits_total{cache="vod"}`); hits < 2 {
				t.Errorf("C's second-level hits %v, want the playlist and the segment", hits)
			}
			if f := metric(t, nodes["l2-c"].HTTPURL, vodFetches); f != 0 {
				t.Errorf("C fetched %v times from other nodes, want 0", f)
			}
		})
	}
}
