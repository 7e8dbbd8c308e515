// Package bench is meshcast's load generator: one publisher sending an FLV
// file paced by its timestamps, and steps of N players over RTMP, HTTP-FLV
// or HLS. Publisher and players share one clock, so each video frame's
// latency through the server is measured directly. It can watch any server's
// process (meshcast or another) for CPU time and memory.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/procstat"
)

// Config describes a benchmark run.
type Config struct {
	PublishURL string        // rtmp://HOST:PORT/APP/STREAM
	PlayURL    string        // rtmp://…, http://….flv or http://…/index.m3u8
	Input      string        // FLV file to publish in a loop
	Steps      []int         // viewer counts, one step each
	Warmup     time.Duration // after every player has joined, before measuring
	Hold       time.Duration // measuring window per step
	PID        int           // server process to measure; 0 skips it
	Labels     map[string]string
	Progress   io.Writer // progress display; nil for none
	Out        io.Writer // one JSON line per step
	// FirstFrames, when set, gets a line per player's first picture:
	// "LOCALADDR PLAYSENT RECEIVED" (Unix nanoseconds), to match with a
	// server's own record of the same connections.
	FirstFrames io.Writer
}

// Result is one step's measurements, written as a JSON line.
type Result struct {
	Labels             map[string]string `json:"labels,omitempty"`
	Proto              string            `json:"proto"`
	Viewers            int               `json:"viewers"`
	Connected          int               `json:"connected"`
	HoldSeconds        float64           `json:"hold_s"`
	SourceBitrate      int64             `json:"source_bps"`
	FramesSent         int64             `json:"frames_sent"`
	DeliveredPct       float64           `json:"delivered_pct"`
	ReceivedBPS        int64             `json:"received_bps"`
	Stalls             int64             `json:"stalls"`
	JoinP50            float64           `json:"join_ms_p50"`
	JoinP99            float64           `json:"join_ms_p99"`
	TTFFp50            float64           `json:"ttff_ms_p50"`
	TTFFp99            float64           `json:"ttff_ms_p99"`
	LatencyP50         float64           `json:"latency_ms_p50"`
	LatencyP99         float64           `json:"latency_ms_p99"`
	ServerCPUPct       float64           `json:"cpu_pct"`
	CPUmsPerViewerSec  float64           `json:"cpu_ms_per_viewer_s"`
	ServerRSS          int64             `json:"rss_bytes"`
	RSSPerViewer       int64             `json:"rss_per_viewer_bytes"`
	LoadgenCPUPct      float64           `json:"loadgen_cpu_pct"`
	Void               bool              `json:"void"`
	VoidReason         string            `json:"void_reason,omitempty"`
	ConnectErrors      int64             `json:"connect_errors"`
	FirstConnectErrMsg string            `json:"connect_error,omitempty"`
	Dropped            int64             `json:"dropped"` // players cut off after joining
	FirstDropMsg       string            `json:"drop_error,omitempty"`
}

// loadgenSaturated is the load generator's own CPU use past which its
// measurements no longer describe the server.
const loadgenSaturated = 90.0

// runner holds one run's shared state.
type runner struct {
	cfg        Config
	pub        *publisher
	httpClient *http.Client

	winStart, winEnd atomic.Int64 // unix nanoseconds; 0 when no window
	join             *histogram   // dial to play accepted
	ttff             *histogram   // play request to first keyframe
	firstMu          sync.Mutex   // serializes writes to cfg.FirstFrames
	latency          *histogram
	windowFrames     atomic.Int64
	stalls           atomic.Int64
}

func (r *runner) inWindow(t time.Time) bool {
	s, e := r.winStart.Load(), r.winEnd.Load()
	n := t.UnixNano()
	return s != 0 && n >= s && (e == 0 || n <= e)
}

// Run publishes the input and runs each step, writing one JSON line per
// step to cfg.Out. It returns the results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	src, err := loadSource(cfg.Input)
	if err != nil {
		return nil, err
	}
	r := &runner{
		cfg: cfg,
		pub: &publisher{src: src, sent: &sendTable{start: time.Now()}},
		httpClient: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 4096},
		},
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubErr := make(chan error, 1)
	go func() { pubErr <- r.pub.run(ctx, cfg.PublishURL) }()

	// Wait for the stream to flow before the first step.
	deadline := time.Now().Add(10 * time.Second)
	for r.pub.frames.Load() < 30 {
		select {
		case err := <-pubErr:
			return nil, fmt.Errorf("publish: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("publish: no frames sent in 10 s")
		}
	}
	var baseRSS int64
	if cfg.PID > 0 {
		st, err := procstat.Read(cfg.PID)
		if err != nil {
			return nil, fmt.Errorf("server process %d: %w", cfg.PID, err)
		}
		baseRSS = st.RSS
	}
	var results []Result
	for i, n := range cfg.Steps {
		res, err := r.step(ctx, i, n, baseRSS, pubErr)
		if err != nil {
			return results, err
		}
		results = append(results, res)
		if cfg.Out != nil {
			b, _ := json.Marshal(res)
			fmt.Fprintf(cfg.Out, "%s\n", b)
		}
	}
	return results, nil
}

func (r *runner) step(ctx context.Context, idx, n int, baseRSS int64, pubErr chan error) (Result, error) {
	r.join, r.ttff, r.latency = &histogram{}, &histogram{}, &histogram{}
	r.windowFrames.Store(0)
	r.stalls.Store(0)
	r.winStart.Store(0)
	r.winEnd.Store(0)
	res := Result{Labels: r.cfg.Labels, Proto: protoOf(r.cfg.PlayURL), Viewers: n, SourceBitrate: r.pub.src.bitrate}

	pctx, stop := context.WithCancel(ctx)
	players := make([]*player, n)
	var wg sync.WaitGroup
	var connErrs atomic.Int64
	var firstErr atomic.Value
	var dropped atomic.Int64 // players cut off after joining
	var firstDrop atomic.Value
	// Every player of the step joins at once: time to first frame is
	// measured under a burst of n joins.
	for i := range players {
		p := &player{r: r, probe: i%probeEvery == 0, joinStart: time.Now()}
		players[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.play(pctx, r.cfg.PlayURL)
			switch {
			case pctx.Err() != nil:
			case !p.connected.Load():
				connErrs.Add(1)
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
				}
			default:
				dropped.Add(1)
				if err != nil {
					firstDrop.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	joinDeadline := time.Now().Add(30 * time.Second)
	for {
		c := 0
		for _, p := range players {
			if p.connected.Load() {
				c++
			}
		}
		res.Connected = c
		if c+int(connErrs.Load()) >= n || time.Now().After(joinDeadline) {
			break
		}
		r.progress(idx, n, "joining", float64(c)/float64(n), nil)
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.sleep(ctx, r.cfg.Warmup, pubErr, func(f float64) { r.progress(idx, n, "warming up", f, nil) }); err != nil {
		return res, err
	}

	srv0, self0 := r.sample()
	framesAt0 := r.pub.frames.Load()
	var bytes0 int64
	for _, p := range players {
		bytes0 += p.bytes.Load()
	}
	t0 := time.Now()
	r.winStart.Store(t0.UnixNano())
	if err := r.sleep(ctx, r.cfg.Hold, pubErr, func(f float64) { r.progress(idx, n, "measuring", f, &res) }); err != nil {
		return res, err
	}
	t1 := time.Now()
	r.winEnd.Store(t1.UnixNano())
	srv1, self1 := r.sample()
	framesSent := r.pub.frames.Load() - framesAt0
	var bytes1 int64
	for _, p := range players {
		bytes1 += p.bytes.Load()
	}
	// Frames sent near the window's end are still on their way.
	if err := r.sleep(ctx, time.Second, pubErr, nil); err != nil {
		return res, err
	}
	elapsed := t1.Sub(t0).Seconds()
	res.HoldSeconds = elapsed
	res.FramesSent = framesSent
	if framesSent > 0 {
		res.DeliveredPct = 100 * float64(r.windowFrames.Load()) / float64(framesSent*int64(n))
	}
	res.ReceivedBPS = int64(float64(bytes1-bytes0) * 8 / elapsed)
	res.Stalls = r.stalls.Load()
	res.JoinP50, res.JoinP99 = r.join.quantile(0.5), r.join.quantile(0.99)
	res.TTFFp50, res.TTFFp99 = r.ttff.quantile(0.5), r.ttff.quantile(0.99)
	res.LatencyP50, res.LatencyP99 = r.latency.quantile(0.5), r.latency.quantile(0.99)
	res.ConnectErrors = connErrs.Load()
	if v := firstErr.Load(); v != nil {
		res.FirstConnectErrMsg = v.(string)
	}
	res.Dropped = dropped.Load()
	if v := firstDrop.Load(); v != nil {
		res.FirstDropMsg = v.(string)
	}
	if r.cfg.PID > 0 {
		cpu := srv1.CPU - srv0.CPU
		res.ServerCPUPct = 100 * cpu.Seconds() / elapsed
		if n > 0 {
			res.CPUmsPerViewerSec = float64(cpu.Milliseconds()) / (float64(n) * elapsed)
			res.RSSPerViewer = (srv1.RSS - baseRSS) / int64(n)
		}
		res.ServerRSS = srv1.RSS
	}
	res.LoadgenCPUPct = 100 * (self1.CPU - self0.CPU).Seconds() / elapsed
	if res.LoadgenCPUPct >= loadgenSaturated {
		res.Void = true
		res.VoidReason = fmt.Sprintf("load generator used %.0f%% of a core: its core is saturated, so these figures describe the load generator, not the server", res.LoadgenCPUPct)
	}
	r.progressDone()
	return res, nil
}

// sample reads the server's and the load generator's process stats.
func (r *runner) sample() (srv, self procstat.Stat) {
	if r.cfg.PID > 0 {
		srv, _ = procstat.Read(r.cfg.PID)
	}
	self, _ = procstat.Read(0)
	return srv, self
}

// sleep waits d, showing progress each second, and fails if the publisher
// stops.
func (r *runner) sleep(ctx context.Context, d time.Duration, pubErr chan error, show func(float64)) error {
	end := time.Now().Add(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		if show != nil {
			show(1 - left.Seconds()/d.Seconds())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-pubErr:
			if err == nil {
				err = fmt.Errorf("publisher stopped")
			}
			return fmt.Errorf("publish: %w", err)
		case <-tick.C:
		case <-time.After(left):
		}
	}
}

func (r *runner) progress(idx, n int, phase string, frac float64, res *Result) {
	if r.cfg.Progress == nil {
		return
	}
	const width = 30
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < filled {
			bar[i] = '#'
		}
	}
	extra := ""
	if res != nil {
		extra = fmt.Sprintf(" connected %d", res.Connected)
	}
	fmt.Fprintf(r.cfg.Progress, "\rstep %d/%d  %5d viewers  %-10s [%s] %3.0f%%%s   ", idx+1, len(r.cfg.Steps), n, phase, bar, 100*frac, extra)
}

func (r *runner) progressDone() {
	if r.cfg.Progress != nil {
		fmt.Fprintln(r.cfg.Progress)
	}
}

func protoOf(u string) string {
	switch {
	case len(u) > 7 && u[:7] == "rtmp://":
		return "rtmp"
	case len(u) > 4 && u[len(u)-4:] == ".flv":
		return "flv"
	}
	return "hls"
}
