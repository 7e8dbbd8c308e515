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
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/procstat"
)

// Config describes a benchmark run.
type Config struct {
	PublishURL string // rtmp://HOST:PORT/APP/STREAM
	// PublishFailover lists more URLs to publish to, in turn, when the
	// publisher's connection breaks (its server died): it reconnects
	// ReconnectDelay later to the next, and goes on from the next
	// keyframe with increasing timestamps, as an encoder does.
	PublishFailover []string
	// ReconnectDelay is the publisher's pause before reconnecting.
	// Defaults to 500 ms.
	ReconnectDelay time.Duration
	PlayURL        string // rtmp://…, http://….flv or http://…/index.m3u8
	// Protocol names how players read PlayURL: rtmp, flv, hls, llhls,
	// whep or srt. Empty infers it from the URL (protoOf).
	Protocol string
	// PlayURLs, when set, replaces PlayURL: each step runs its N players
	// on each of them at once (the tiers of a cluster, say), one result
	// per URL, labelled play=URL.
	PlayURLs []string
	// Stagger, with several PlayURLs, starts the players of each URL
	// this long after those of the URL before: nodes of a mesh then find
	// a peer already relaying. Zero starts every player at once.
	Stagger  time.Duration
	Input    string        // FLV file to publish in a loop
	Steps    []int         // viewer counts, one step each
	Warmup   time.Duration // after every player has joined, before measuring
	Hold     time.Duration // measuring window per step
	PID      int           // server process to measure; 0 skips it
	Labels   map[string]string
	Progress io.Writer // progress display; nil for none
	Out      io.Writer // one JSON line per step
	// FirstFrames, when set, gets a line per player's first picture:
	// "LOCALADDR PLAYSENT RECEIVED" (Unix nanoseconds), to match with a
	// server's own record of the same connections.
	FirstFrames io.Writer
}

// Result is one step's measurements, written as a JSON line.
type Result struct {
	Labels            map[string]string `json:"labels,omitempty"`
	Proto             string            `json:"proto"`
	Viewers           int               `json:"viewers"`
	Connected         int               `json:"connected"`
	HoldSeconds       float64           `json:"hold_s"`
	SourceBitrate     int64             `json:"source_bps"`
	FramesSent        int64             `json:"frames_sent"`
	DeliveredPct      float64           `json:"delivered_pct"`
	ReceivedBPS       int64             `json:"received_bps"`
	Stalls            int64             `json:"stalls"`
	JoinP50           float64           `json:"join_ms_p50"`
	JoinP99           float64           `json:"join_ms_p99"`
	TTFFp50           float64           `json:"ttff_ms_p50"`
	TTFFp99           float64           `json:"ttff_ms_p99"`
	LatencyP50        float64           `json:"latency_ms_p50"`
	LatencyP99        float64           `json:"latency_ms_p99"`
	ServerCPUPct      float64           `json:"cpu_pct"`
	CPUmsPerViewerSec float64           `json:"cpu_ms_per_viewer_s"`
	ServerRSS         int64             `json:"rss_bytes"`
	RSSPerViewer      int64             `json:"rss_per_viewer_bytes"`
	LoadgenCPUPct     float64           `json:"loadgen_cpu_pct"`
	Void              bool              `json:"void"`
	VoidReason        string            `json:"void_reason,omitempty"`
	// GapMax and GapP99 are the players' longest gaps between two video
	// frames in the window: the longest of all, and the 99th percentile
	// of each player's longest.
	GapMax float64 `json:"gap_ms_max"`
	GapP99 float64 `json:"gap_ms_p99"`
	// Failovers counts the publisher's reconnections to another URL in
	// the window; PublishAccept is the longest of them, from its redial
	// to the server's accepting the publish (ms).
	Failovers          int64   `json:"failovers,omitempty"`
	PublishAccept      float64 `json:"publish_accept_ms,omitempty"`
	ConnectErrors      int64   `json:"connect_errors"`
	FirstConnectErrMsg string  `json:"connect_error,omitempty"`
	Dropped            int64   `json:"dropped"` // players cut off after joining
	FirstDropMsg       string  `json:"drop_error,omitempty"`

	// Packet players (WHEP, SRT): RTP or SRT packets expected and lost
	// in the window (from sequence-number gaps).
	PacketsExpected int64   `json:"packets_expected,omitempty"`
	PacketsLost     int64   `json:"packets_lost,omitempty"`
	LossPct         float64 `json:"loss_pct,omitempty"`
	// HTTP players (HLS, LL-HLS): requests answered in the window, per
	// second, and their latency (request sent to last byte, ms). Like
	// every quantile here, the ones below are -1 without samples.
	Requests       int64   `json:"requests,omitempty"`
	RequestsPerSec float64 `json:"requests_per_s,omitempty"`
	RequestP50     float64 `json:"request_ms_p50"`
	RequestP99     float64 `json:"request_ms_p99"`
	// PartP50 and PartP99 (LL-HLS): from the send time of the frame after
	// a part's last one to the part's last byte received (ms).
	PartP50 float64 `json:"part_ms_p50"`
	PartP99 float64 `json:"part_ms_p99"`
	// BehindP50 and BehindP99 (HLS, LL-HLS): how far the players'
	// playheads are behind the live edge (ms), sampled in the window.
	BehindP50 float64 `json:"behind_live_ms_p50"`
	BehindP99 float64 `json:"behind_live_ms_p99"`
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
	hlsDelay         atomic.Int64 // ns: the longest segment or part duration HLS players wait for (settle)
	firstMu          sync.Mutex   // serializes writes to cfg.FirstFrames
}

// tally is what one step's players of one URL measure.
type tally struct {
	join         histogram // dial to play accepted
	ttff         histogram // play request to first keyframe
	latency      histogram
	gaps         histogram // each player's longest gap in the window
	gapMax       atomic.Int64
	windowFrames atomic.Int64
	stalls       atomic.Int64

	// Packet players: counted in the window.
	pktsExpected atomic.Int64
	pktsLost     atomic.Int64
	// HTTP players: requests in the window and their latency.
	requests histogram
	partLate histogram // LL-HLS part delivery, see Result.PartP99
	behind   histogram // playhead behind the live edge
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
		pub: &publisher{src: src, sent: &sendTable{start: time.Now()}, delay: cfg.ReconnectDelay},
		httpClient: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 4096},
		},
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubErr := make(chan error, 1)
	go func() { pubErr <- r.pub.run(ctx, append([]string{cfg.PublishURL}, cfg.PublishFailover...), r.inWindow) }()

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
	// HTTP players arrive once the stream can be played: a copy served
	// by a static server (bench/compare-hls.sh) has its first playlist
	// only seconds after the publisher began.
	if err := r.awaitPlayable(ctx, pubErr); err != nil {
		return nil, err
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
		results = append(results, res...)
		if err != nil {
			return results, err
		}
		if cfg.Out != nil {
			for _, one := range res {
				b, _ := json.Marshal(one)
				fmt.Fprintf(cfg.Out, "%s\n", b)
			}
		}
	}
	return results, nil
}

// awaitPlayable waits, at most 30 s, until every HLS play URL answers
// 200.
func (r *runner) awaitPlayable(ctx context.Context, pubErr chan error) error {
	for _, u := range r.playURLs() {
		if p := r.protocol(u); p != "hls" && p != "llhls" {
			continue
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return err
			}
			status := 0
			if resp, err := r.httpClient.Do(req); err == nil {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				status = resp.StatusCode
			}
			if status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not playable 30 s after the publisher began (last status %d)", u, status)
			}
			select {
			case err := <-pubErr:
				return fmt.Errorf("publish: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	return nil
}

// playURLs returns the URLs each step's players read.
func (r *runner) playURLs() []string {
	if len(r.cfg.PlayURLs) > 0 {
		return r.cfg.PlayURLs
	}
	return []string{r.cfg.PlayURL}
}

// step runs n players on each play URL and measures them. It returns one
// result per URL.
func (r *runner) step(ctx context.Context, idx, n int, baseRSS int64, pubErr chan error) ([]Result, error) {
	urls := r.playURLs()
	r.winStart.Store(0)
	r.winEnd.Store(0)
	r.pub.resetFailovers()
	total := n * len(urls)

	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	groups := make([]*group, len(urls))
	var all []*player
	// Every player of the step joins at once (or, with a stagger, every
	// player of a URL): time to first frame is measured under a burst of
	// joins.
	for k, u := range urls {
		if k > 0 && r.cfg.Stagger > 0 {
			if err := r.sleep(ctx, r.cfg.Stagger, pubErr, nil); err != nil {
				return nil, err
			}
		}
		g := &group{url: u, t: &tally{}}
		groups[k] = g
		for i := range n {
			p := &player{r: r, t: g.t, probe: i%probeEvery == 0, joinStart: time.Now()}
			g.players = append(g.players, p)
			all = append(all, p)
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.ended(pctx, p, p.play(pctx, u))
			}()
		}
	}
	joinDeadline := time.Now().Add(30 * time.Second)
	for {
		c, failed := 0, 0
		for _, g := range groups {
			c += g.connected()
			failed += int(g.connErrs.Load())
		}
		if c+failed >= total || time.Now().After(joinDeadline) {
			break
		}
		r.progress(idx, total, "joining", float64(c)/float64(total), nil)
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.sleep(ctx, r.cfg.Warmup, pubErr, func(f float64) { r.progress(idx, total, "warming up", f, nil) }); err != nil {
		return nil, err
	}

	srv0, self0 := r.sample()
	framesAt0 := r.pub.frames.Load()
	bytes0 := make([]int64, len(groups))
	for k, g := range groups {
		bytes0[k] = g.bytes()
	}
	for _, p := range all {
		p.maxGap.Store(0)
	}
	t0 := time.Now()
	r.winStart.Store(t0.UnixNano())
	connected := 0
	for _, g := range groups {
		connected += g.connected()
	}
	progress := &Result{Connected: connected}
	if err := r.sleep(ctx, r.cfg.Hold, pubErr, func(f float64) { r.progress(idx, total, "measuring", f, progress) }); err != nil {
		return nil, err
	}
	t1 := time.Now()
	r.winEnd.Store(t1.UnixNano())
	srv1, self1 := r.sample()
	framesSent := r.pub.frames.Load() - framesAt0
	bytes1 := make([]int64, len(groups))
	for k, g := range groups {
		bytes1[k] = g.bytes()
	}
	// Frames sent near the window's end are still on their way.
	if err := r.sleep(ctx, r.settle(), pubErr, nil); err != nil {
		return nil, err
	}
	elapsed := t1.Sub(t0).Seconds()
	var results []Result
	for k, g := range groups {
		res := Result{Labels: r.cfg.Labels, Proto: r.protocol(g.url), Viewers: n, SourceBitrate: r.pub.src.bitrate,
			HoldSeconds: elapsed, FramesSent: framesSent, Connected: g.connected()}
		if len(urls) > 1 {
			res.Labels = map[string]string{"play": g.url}
			maps.Copy(res.Labels, r.cfg.Labels)
		}
		t := g.t
		if framesSent > 0 {
			res.DeliveredPct = 100 * float64(t.windowFrames.Load()) / float64(framesSent*int64(n))
		}
		res.ReceivedBPS = int64(float64(bytes1[k]-bytes0[k]) * 8 / elapsed)
		res.Stalls = t.stalls.Load()
		res.JoinP50, res.JoinP99 = t.join.quantile(0.5), t.join.quantile(0.99)
		res.TTFFp50, res.TTFFp99 = t.ttff.quantile(0.5), t.ttff.quantile(0.99)
		res.LatencyP50, res.LatencyP99 = t.latency.quantile(0.5), t.latency.quantile(0.99)
		for _, p := range g.players {
			if p.connected.Load() {
				t.gaps.add(time.Duration(p.maxGap.Load()))
			}
		}
		res.PacketsExpected, res.PacketsLost = t.pktsExpected.Load(), t.pktsLost.Load()
		if res.PacketsExpected > 0 {
			res.LossPct = 100 * float64(res.PacketsLost) / float64(res.PacketsExpected)
		}
		res.Requests = t.requests.n.Load()
		res.RequestsPerSec = float64(res.Requests) / elapsed
		res.RequestP50, res.RequestP99 = t.requests.quantile(0.5), t.requests.quantile(0.99)
		res.PartP50, res.PartP99 = t.partLate.quantile(0.5), t.partLate.quantile(0.99)
		res.BehindP50, res.BehindP99 = t.behind.quantile(0.5), t.behind.quantile(0.99)
		res.GapMax = float64(time.Duration(t.gapMax.Load()).Milliseconds())
		res.GapP99 = t.gaps.quantile(0.99)
		res.Failovers, res.PublishAccept = r.pub.failovers()
		res.ConnectErrors = g.connErrs.Load()
		if v := g.firstErr.Load(); v != nil {
			res.FirstConnectErrMsg = v.(string)
		}
		res.Dropped = g.dropped.Load()
		if v := g.firstDrop.Load(); v != nil {
			res.FirstDropMsg = v.(string)
		}
		if r.cfg.PID > 0 {
			cpu := srv1.CPU - srv0.CPU
			res.ServerCPUPct = 100 * cpu.Seconds() / elapsed
			res.CPUmsPerViewerSec = float64(cpu.Milliseconds()) / (float64(total) * elapsed)
			res.RSSPerViewer = (srv1.RSS - baseRSS) / int64(total)
			res.ServerRSS = srv1.RSS
		}
		res.LoadgenCPUPct = 100 * (self1.CPU - self0.CPU).Seconds() / elapsed
		if res.LoadgenCPUPct >= loadgenSaturated {
			res.Void = true
			res.VoidReason = fmt.Sprintf("load generator used %.0f%% of a core: its core is saturated, so these figures describe the load generator, not the server", res.LoadgenCPUPct)
		}
		results = append(results, res)
	}
	r.progressDone()
	return results, nil
}

// group is one step's players of one play URL.
type group struct {
	url       string
	t         *tally
	players   []*player
	connErrs  atomic.Int64
	firstErr  atomic.Value
	dropped   atomic.Int64 // players cut off after joining
	firstDrop atomic.Value
}

// ended records why a player stopped.
func (g *group) ended(ctx context.Context, p *player, err error) {
	switch {
	case ctx.Err() != nil:
	case !p.connected.Load():
		g.connErrs.Add(1)
		if err != nil {
			g.firstErr.CompareAndSwap(nil, err.Error())
		}
	default:
		g.dropped.Add(1)
		if err != nil {
			g.firstDrop.CompareAndSwap(nil, err.Error())
		}
	}
}

func (g *group) connected() int {
	c := 0
	for _, p := range g.players {
		if p.connected.Load() {
			c++
		}
	}
	return c
}

func (g *group) bytes() int64 {
	var b int64
	for _, p := range g.players {
		b += p.bytes.Load()
	}
	return b
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

// Protocols are the players' protocols, for Config.Protocol.
var Protocols = []string{"rtmp", "flv", "hls", "llhls", "whep", "srt"}

// protocol is how the players of url play: Config.Protocol, or what the
// URL says.
func (r *runner) protocol(url string) string {
	if r.cfg.Protocol != "" {
		return r.cfg.Protocol
	}
	return protoOf(url)
}

// protoOf infers a play URL's protocol: rtmp://, srt://, a .flv path, a
// WHEP endpoint (…/whep), or else HLS (an .m3u8 playlist).
func protoOf(u string) string {
	switch {
	case strings.HasPrefix(u, "rtmp://"):
		return "rtmp"
	case strings.HasPrefix(u, "srt://"):
		return "srt"
	case strings.HasSuffix(u, ".flv"):
		return "flv"
	case strings.HasSuffix(u, "/whep"):
		return "whep"
	}
	return "hls"
}
