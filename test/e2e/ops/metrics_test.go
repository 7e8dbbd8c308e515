//go:build unix

package ops

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestMetrics publishes and plays a stream on a node and checks what an
// operator sees of it: the node's /metrics (and promtool's verdict on it),
// a real Prometheus scraping it with the shipped configuration, and the
// shipped Grafana dashboard's queries.
func TestMetrics(t *testing.T) {
	testutil.Need(t, "promtool")
	n := e2eutil.StartNode(t, nil)
	const name = "live/metrics"
	e2eutil.PublishFFmpeg(t, n.RTMPURL(name))
	e2eutil.WaitLiveHTTP(t, n.HTTPURL, name)
	liveAt := time.Now()
	rv := e2eutil.PlayRTMP(t, fmt.Sprintf("127.0.0.1:%d", n.RTMPPort), name)
	fv := e2eutil.PlayFLV(t, n.HTTPURL+"/"+name+".flv")
	t.Cleanup(fv.Close)
	rv.WaitFrames(t, 30, 15*time.Second)

	// The input rate is the average of the last 5 whole seconds: once the
	// stream has been live that long it is the publisher's 2 Mbit/s (video
	// and audio), in bytes per second, Prometheus's base unit.
	time.Sleep(time.Until(liveAt.Add(7 * time.Second)))
	const minRate, maxRate = 1.5e6 / 8, 3.0e6 / 8
	inRate := `meshcast_stream_received_bytes_per_second{stream="live/metrics"}`
	var sc e2eutil.MetricsScrape
	testutil.WaitFor(t, 15*time.Second, "the stream's input near 2 Mbit/s", func() bool {
		sc = e2eutil.ScrapeMetrics(t, n.HTTPURL)
		v, ok := sc.Samples[inRate]
		return ok && v >= minRate && v <= maxRate
	})

	t.Run("Scrape", func(t *testing.T) {
		atLeast := func(series string, min float64) {
			t.Helper()
			v, ok := sc.Samples[series]
			switch {
			case !ok:
				t.Errorf("%s missing from /metrics", series)
			case v < min:
				t.Errorf("%s = %v, want at least %v", series, v, min)
			}
		}
		between := func(series string, lo, hi float64) {
			t.Helper()
			v, ok := sc.Samples[series]
			switch {
			case !ok:
				t.Errorf("%s missing from /metrics", series)
			case v < lo || v > hi:
				t.Errorf("%s = %v, want %v to %v", series, v, lo, hi)
			}
		}
		atLeast(`meshcast_viewers{protocol="rtmp"}`, 1)
		atLeast(`meshcast_viewers{protocol="flv"}`, 1)
		between(`meshcast_viewers{protocol="relay"}`, 0, 0)
		atLeast(`meshcast_connections{protocol="rtmp"}`, 2) // the publisher and the player
		atLeast(`meshcast_connections{protocol="flv"}`, 1)
		between(`meshcast_publishers`, 1, 1)
		between(`meshcast_streams`, 1, 1)
		atLeast(`meshcast_received_bytes_total`, 100e3)
		atLeast(`meshcast_sent_bytes_total`, 100e3)
		between(`meshcast_relay_upstreams`, 0, 0)
		between(inRate, minRate, maxRate)
		t.Logf("input %.2f Mbit/s, keyframes every %.2f s", sc.Samples[inRate]*8/1e6, sc.Samples[`meshcast_stream_keyframe_interval_seconds{stream="live/metrics"}`])
		between(`meshcast_stream_fps{stream="live/metrics"}`, 29, 31)
		between(`meshcast_stream_keyframe_interval_seconds{stream="live/metrics"}`, 0.5, 2.5) // -g 60 at 30 fps
		atLeast(`meshcast_stream_viewers{protocol="rtmp",stream="live/metrics"}`, 1)
		atLeast(`meshcast_stream_viewers{protocol="flv",stream="live/metrics"}`, 1)
		// The node beats every second and claimed the stream, through
		// the instrumented registry; an in-memory registry never fails.
		atLeast(`meshcast_registry_request_duration_seconds_count{op="beat"}`, 1)
		atLeast(`meshcast_registry_request_duration_seconds_count{op="claim"}`, 1)
		between(`meshcast_registry_errors_total{op="beat"}`, 0, 0)
		atLeast(`go_goroutines`, 1)
		atLeast(`process_cpu_seconds_total`, 0)
		for _, fam := range []string{"meshcast_received_bytes_total", "meshcast_sent_bytes_total", "meshcast_reader_skips_total", "meshcast_slow_readers_closed_total", "meshcast_registry_errors_total"} {
			if typ := sc.Types[fam]; typ != "counter" {
				t.Errorf("%s has type %q, want counter", fam, typ)
			}
		}
		if typ := sc.Types["meshcast_registry_request_duration_seconds"]; typ != "histogram" {
			t.Errorf("meshcast_registry_request_duration_seconds has type %q, want histogram", typ)
		}
		for fam := range sc.Types {
			if strings.HasPrefix(fam, "meshcast_") && !sc.Help[fam] {
				t.Errorf("%s has no HELP", fam)
			}
		}

		// Prometheus's own linter accepts the exposition as served.
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = strings.NewReader(sc.Text)
		if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})

	t.Run("Grafana", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(e2eutil.RepoRoot(t), "deploy", "grafana", "meshcast.json"))
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			SchemaVersion int `json:"schemaVersion"`
			Templating    struct {
				List []struct {
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
			Panels []struct {
				Title string `json:"title"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			t.Fatalf("meshcast.json: %v", err)
		}
		if dash.SchemaVersion < 36 {
			t.Errorf("schemaVersion %d, want 36 or more", dash.SchemaVersion)
		}
		hasDS := false
		for _, v := range dash.Templating.List {
			hasDS = hasDS || v.Type == "datasource" && v.Query == "prometheus"
		}
		if !hasDS {
			t.Error("no Prometheus data source variable")
		}
		var titles []string
		for _, p := range dash.Panels {
			titles = append(titles, strings.ToLower(p.Title))
		}
		all := strings.Join(titles, "|")
		for _, w := range []string{"nodes up", "viewers by protocol and node", "bandwidth", "stream bitrate", "relay upstreams", "skips", "slow closes", "registry errors", "registry latency p99"} {
			if !strings.Contains(all, w) {
				t.Errorf("no panel about %q among %q", w, titles)
			}
		}

		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		var exprs []string
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, x := range v {
					if s, ok := x.(string); ok && k == "expr" {
						exprs = append(exprs, s)
					}
					walk(x)
				}
			case []any:
				for _, x := range v {
					walk(x)
				}
			}
		}
		walk(doc)
		if len(exprs) < 9 {
			t.Fatalf("%d expressions in the dashboard, want one per panel at least", len(exprs))
		}
		names := map[string]bool{}
		for _, e := range exprs {
			for _, m := range regexp.MustCompile(`meshcast_[a-z_]+`).FindAllString(e, -1) {
				names[m] = true
			}
		}
		for name := range names {
			if !sc.Has(name) {
				t.Errorf("the dashboard queries %s, which the node does not serve", name)
			}
		}
	})

	t.Run("Prometheus", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a Prometheus server")
		}
		testutil.Need(t, "prometheus")
		target := strings.TrimPrefix(n.HTTPURL, "http://")
		cfg := prometheusConfig(t, target)
		promURL := startPrometheus(t, cfg)

		// Prometheus scrapes the node and has its series.
		var res []promSample
		testutil.WaitFor(t, 60*time.Second, "Prometheus to have the node's meshcast_ series", func() bool {
			res = promQuery(t, promURL, `meshcast_viewers{job="meshcast",protocol="rtmp"}`)
			return len(res) == 1 && res[0].Value >= 1
		})
		if got := res[0].Metric["instance"]; got != target {
			t.Errorf("instance %q, want %q", got, target)
		}
		up := promQuery(t, promURL, `up{job="meshcast"}`)
		if len(up) != 1 || up[0].Value != 1 {
			t.Errorf("up = %+v, want one target up", up)
		}
		testutil.WaitFor(t, 30*time.Second, "Prometheus to have the stream's input rate", func() bool {
			r := promQuery(t, promURL, inRate)
			return len(r) == 1 && r[0].Value > 0
		})
	})
}

// In a cluster, the node pulling a stream shows a relay upstream and the
// owner shows it as a relay viewer; both count the media they move.
func TestMetricsRelay(t *testing.T) {
	t.Parallel()
	nodes := e2eutil.StartClusterNodes(t, nil, "node-a", "node-b")
	a, b := nodes[0], nodes[1]
	e2eutil.PublishFFmpeg(t, a.RTMPURL("live/relayed"))
	e2eutil.WaitLive(t, a, "live/relayed")
	v := e2eutil.PlayRTMP(t, b.RTMPAddr().String(), "live/relayed")
	v.WaitFrames(t, 30, 15*time.Second)

	want := func(sc e2eutil.MetricsScrape, node, series string, lo, hi float64) {
		t.Helper()
		got, ok := sc.Samples[series]
		switch {
		case !ok:
			t.Errorf("%s: %s missing from /metrics", node, series)
		case got < lo || got > hi:
			t.Errorf("%s: %s = %v, want %v to %v", node, series, got, lo, hi)
		}
	}
	inf := math.Inf(1)
	// B records its relay in the registry with its next beat.
	testutil.WaitFor(t, 10*time.Second, "B to record its relay", func() bool {
		s, ok := e2eutil.GetStream(t, a.HTTPURL, "live/relayed")
		return ok && len(s.Relays) == 1 && s.Relays[0].Node == "node-b"
	})
	sb := e2eutil.ScrapeMetrics(t, b.HTTPURL)
	sa := e2eutil.ScrapeMetrics(t, a.HTTPURL)
	want(sa, "A", `meshcast_publishers`, 1, 1)
	want(sa, "A", `meshcast_viewers{protocol="relay"}`, 1, 1)
	want(sa, "A", `meshcast_stream_viewers{protocol="relay",stream="live/relayed"}`, 1, 1)
	want(sa, "A", `meshcast_relay_upstreams`, 0, 0)
	want(sa, "A", `meshcast_sent_bytes_total`, 10e3, inf) // the pull
	want(sb, "B", `meshcast_publishers`, 0, 0)            // a relay is not a publisher
	want(sb, "B", `meshcast_streams`, 1, 1)
	want(sb, "B", `meshcast_relay_upstreams`, 1, 1)
	want(sb, "B", `meshcast_viewers{protocol="rtmp"}`, 1, 1)
	want(sb, "B", `meshcast_received_bytes_total`, 10e3, inf) // relayed in
	want(sb, "B", `meshcast_registry_request_duration_seconds_count{op="beat"}`, 1, inf)
	want(sb, "B", `meshcast_registry_errors_total{op="beat"}`, 0, 0)
}

// prometheusConfig checks the shipped deploy/prometheus/prometheus.yml and
// returns a copy of it that scrapes target every second.
func prometheusConfig(t *testing.T, target string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e2eutil.RepoRoot(t), "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	scrapes, _ := cfg["scrape_configs"].([]any)
	var job map[string]any
	for _, s := range scrapes {
		if m, ok := s.(map[string]any); ok && m["job_name"] == "meshcast" {
			job = m
		}
	}
	if job == nil {
		t.Fatal("prometheus.yml: no scrape config with job_name meshcast")
	}
	if job["metrics_path"] != "/metrics" {
		t.Errorf("prometheus.yml: metrics_path %v, want /metrics", job["metrics_path"])
	}
	interval, _ := job["scrape_interval"].(string)
	if d, err := time.ParseDuration(interval); err != nil || d < 5*time.Second || d > 15*time.Second {
		t.Errorf("prometheus.yml: scrape_interval %q, want 5s to 15s", interval)
	}
	if !strings.Contains(string(b), "meshcast-1:8080") {
		t.Error("prometheus.yml: the example targets are gone")
	}

	// The test's copy: this node, scraped every second.
	job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
	job["static_configs"] = []any{map[string]any{"targets": []any{target}}}
	if g, ok := cfg["global"].(map[string]any); ok {
		g["scrape_interval"], g["evaluation_interval"] = "1s", "1s"
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "config", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	return path
}

// startPrometheus runs a Prometheus server with config on a free loopback
// port and returns its URL once it is ready.
func startPrometheus(t *testing.T, config string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	var logs testutil.LockedBuffer
	cmd := exec.Command("prometheus",
		"--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(t.TempDir(), "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-waited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-waited
			t.Errorf("prometheus did not exit within 15 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	u := "http://" + addr
	testutil.WaitFor(t, 30*time.Second, "prometheus to be ready", func() bool {
		select {
		case err := <-waited:
			waited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		code, _ := e2eutil.HTTPGetQuiet(u + "/-/ready")
		return code == 200
	})
	return u
}

// promSample is one element of an instant query's vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query on the Prometheus at promURL.
func promQuery(t *testing.T, promURL, query string) []promSample {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		t.Fatalf("query %s: %v", query, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Status != "success" || out.Data.ResultType != "vector" {
		t.Fatalf("query %s: %d %s", query, resp.StatusCode, b)
	}
	var res []promSample
	for _, r := range out.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %s: value %v", query, r.Value)
		}
		res = append(res, promSample{Metric: r.Metric, Value: v})
	}
	return res
}
