//go:build unix

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// longTests is the environment variable that turns on the long version.
const longTests = "MESHCAST_LONG_TESTS"

// plan is one version of the soak.
type plan struct {
	name         string
	warmup       time.Duration // churn before the baseline
	run          time.Duration // the churn measured against the baseline
	cycles       int           // viewer cycles of the run, the protocols in turn
	restartEvery time.Duration // a restarting publisher's life
	restarting   int           // streams whose publisher restarts
	transcode    bool          // one more restarting stream, transcoded
	concurrency  int           // viewer cycles at once, at most
	settle       time.Duration // the longest wait for the server to be back at its baseline
}

var (
	// shortPlan runs in the normal suite: 300 cycles in a minute.
	shortPlan = plan{name: "short", warmup: 20 * time.Second, run: 60 * time.Second, cycles: 300,
		restartEvery: 15 * time.Second, restarting: 3, concurrency: 24, settle: 60 * time.Second}
	// longPlan is make soak: 10,000 cycles in 30 minutes, transcoding.
	longPlan = plan{name: "long", warmup: 75 * time.Second, run: 30 * time.Minute, cycles: 10000,
		restartEvery: time.Minute, restarting: 3, transcode: true, concurrency: 40, settle: 90 * time.Second}
)

const (
	steadyName = "live/steady"
	// maxGap is the longest pause between two frames the steady viewers
	// may see.
	maxGap = 2 * time.Second
	// cycleTimeout bounds a viewer cycle, connecting included.
	cycleTimeout = 20 * time.Second
	// heapSlack is how far the heap after a collection may end from its
	// baseline.
	heapSlack = 0.10
	// grace is the server's default --publisher-grace.
	grace = 5 * time.Second
)

// TestSoak runs one meshcast process under the churn of a real audience
// (publishers restarting on a few streams and a steady one that never
// does; viewers connecting, reading and leaving over RTMP, HTTP-FLV,
// WebSocket-FLV, HLS, SRT and WHEP; REST and Socket.IO clients coming
// and going; in the long version one stream transcoded) while an
// HTTP-FLV and an RTMP viewer watch the steady stream throughout. The
// steady viewers must never wait more than 2 s for a frame, every cycle
// must get media, and once the churn is over the server's goroutines,
// open files and ffmpeg children must be back at their baseline, taken
// after a warm-up, and its heap after a collection within 10 % of it.
//
// Both readings are taken in the same quiet state: the restarting
// publishers stopped and their streams ended, no client but the steady
// publisher and its two viewers.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	testutil.Need(t, "ffmpeg")
	p := shortPlan
	if os.Getenv(longTests) == "1" {
		p = longPlan
	}
	t.Logf("%s soak: %v warm-up, %v run, %d viewer cycles, publishers restarting every %v, transcoding %v",
		p.name, p.warmup, p.run, p.cycles, p.restartEvery, p.transcode)

	input := e2eutil.Input(t)
	flags := []string{"--pprof"}
	if p.transcode {
		cfg := filepath.Join(t.TempDir(), "meshcast.yaml")
		// One small rendition at x264's ultrafast preset, so that it runs
		// beside the rest on two cores.
		yaml := "apps:\n  tc:\n    transcode: \"on\"\n    ladder:\n" +
			"      - {name: 180p, height: 180, video_bitrate: 300k, preset: ultrafast, gop: 60, audio_bitrate: 64k}\n"
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		flags = append(flags, "--config", cfg)
	}
	proc := e2eutil.StartProcess(t, flags...)
	srv := server{httpURL: proc.HTTPURL, rtmpAddr: proc.RTMPAddr, srtAddr: fmt.Sprintf("127.0.0.1:%d", proc.SRTPort(t))}
	probe := newProber(proc.Cmd.Process.Pid, proc.HTTPURL)

	// The steady stream and its two viewers, for the whole run.
	e2eutil.PublishLoop(t, input, "rtmp://"+srv.rtmpAddr+"/"+steadyName)
	waitLive(t, srv, steadyName, 15*time.Second)
	flvSteady := e2eutil.PlayFLV(t, srv.httpURL+"/"+steadyName+".flv")
	defer flvSteady.Close()
	rtmpSteady := e2eutil.PlayRTMP(t, srv.rtmpAddr, steadyName)
	testutil.WaitFor(t, 10*time.Second, "the steady viewers' first frames", func() bool {
		return flvSteady.Video.Load() > 0 && rtmpSteady.Video.Load() > 0
	})

	var pubs []*publisher
	for i := range p.restarting {
		pubs = append(pubs, &publisher{name: fmt.Sprintf("live/r%d", i+1), input: input, srv: srv})
	}
	if p.transcode {
		pubs = append(pubs, &publisher{name: "tc/t1", rendition: "tc/t1_180p", input: input, srv: srv})
	}
	st := &stats{ok: map[string]int{}, failed: map[string]int{}, frames: map[string]int64{}}

	// Warm-up: the churn until every restarting publisher has restarted
	// and every protocol has cycled.
	warmCycles := int(float64(p.cycles) * p.warmup.Seconds() / p.run.Seconds())
	churn(t, p, srv, probe, pubs, st, p.warmup, warmCycles)
	warm := st.snapshot()
	base := settle(t, probe, p, nil)
	profiles := os.Getenv("MESHCAST_SOAK_PROFILES")
	if profiles != "" {
		if err := probe.saveHeap(profiles, "baseline"); err != nil {
			t.Error(err)
		}
	}
	t.Logf("baseline after %d warm-up cycles, %v after the churn: %v", warm.cycles(), base.after.Round(time.Second), base.usage)

	// The run.
	flvSteady.Gaps.Reset()
	rtmpSteady.Gaps.Reset()
	peak := churn(t, p, srv, probe, pubs, st, p.run, p.cycles)
	run := st.snapshot().minus(warm)
	end := settle(t, probe, p, &base.usage)
	if profiles != "" {
		if err := probe.saveHeap(profiles, "end"); err != nil {
			t.Error(err)
		}
	}
	t.Logf("end, %v after the churn: %v (heap %d bytes, baseline %d: %+.1f %%)", end.after.Round(time.Second), end.usage,
		end.Heap, base.Heap, 100*(float64(end.Heap)/float64(base.Heap)-1))

	// The steady viewers watched throughout, settling included.
	for _, v := range []struct {
		name   string
		frames int64
		gap    time.Duration
		err    any
	}{
		{"HTTP-FLV", flvSteady.Video.Load(), flvSteady.Gaps.Max(), flvSteady.Err.Load()},
		{"RTMP", rtmpSteady.Video.Load(), rtmpSteady.Gaps.Max(), rtmpSteady.Err.Load()},
	} {
		t.Logf("steady %s viewer: %d frames, longest gap %v", v.name, v.frames, v.gap.Round(time.Millisecond))
		if v.err != nil {
			t.Errorf("the steady %s viewer ended: %v", v.name, v.err)
		}
		if v.gap > maxGap {
			t.Errorf("the steady %s viewer waited %v for a frame, more than %v", v.name, v.gap.Round(time.Millisecond), maxGap)
		}
	}
	if b := rtmpSteady.BackTS.Load() + flvSteady.BackTS.Load(); b != 0 {
		t.Errorf("the steady viewers' timestamps went back %d times", b)
	}

	t.Logf("run: %s", run)
	t.Logf("peak during the run: %d goroutines, %d open files, %d ffmpeg children", peak.Goroutines, peak.FDs, peak.FFmpeg)
	if run.cycles() < p.cycles {
		t.Errorf("%d viewer cycles in the run, want %d", run.cycles(), p.cycles)
	}
	for _, proto := range protocols {
		if run.ok[proto] == 0 {
			t.Errorf("no %s cycle succeeded", proto)
		}
	}
	if n := run.failures(); n > 0 {
		t.Errorf("%d cycles or clients failed; the first: %s", n, strings.Join(st.firstErrors(), "\n"))
	}
	for _, pb := range pubs {
		if pb.restarts() < 2 {
			t.Errorf("%s: %d publisher restarts, want 2 or more", pb.name, pb.restarts())
		}
	}
	if p.transcode && peak.FFmpeg == 0 {
		t.Errorf("no ffmpeg child seen during the run: the stream was not transcoded")
	}
}

// settled is the server's usage once the churn is over, and how long
// after it was read.
type settled struct {
	usage
	after time.Duration
}

// settle waits for the quiet state after a churn and reads the server's
// usage. Without a baseline it waits for a steady reading: at least 15 s
// (past the publisher grace, the grace of WebRTC's audio transcoders and
// ICE's disconnection), then the same goroutines, files and children
// five times a second apart, then the heap. With one, it waits up to the
// plan's settle for the usage to come back to it, and fails the test
// with what is left over when it does not.
func settle(t *testing.T, probe *prober, p plan, base *usage) settled {
	t.Helper()
	start := time.Now()
	time.Sleep(15 * time.Second)
	counts := func(a, b usage) bool { return a.Goroutines == b.Goroutines && a.FDs == b.FDs && a.FFmpeg == b.FFmpeg }
	var last usage
	same := 0
	for time.Since(start) < p.settle+15*time.Second {
		u, err := probe.peek()
		if err != nil {
			t.Fatalf("reading the server's usage: %v", err)
		}
		if base == nil && counts(u, last) {
			same++
		} else {
			same = 1
		}
		last = u
		if base == nil && same >= 5 || base != nil && counts(u, *base) {
			peeked := u
			if u, err = probe.read(); err != nil {
				t.Fatalf("reading the server's usage: %v", err)
			}
			last = u
			heapOK := base == nil ||
				float64(u.Heap) <= float64(base.Heap)*(1+heapSlack) && float64(u.Heap) >= float64(base.Heap)*(1-heapSlack)
			if counts(u, peeked) && heapOK {
				return settled{u, time.Since(start)}
			}
		}
		time.Sleep(time.Second)
	}
	if base == nil {
		t.Fatalf("the server's usage did not settle in %v: last %v", time.Since(start).Round(time.Second), last)
	}
	t.Errorf("%v after the churn the server is not back at its baseline:\nbaseline %v\nend      %v (heap %+.1f %%)\n%s",
		time.Since(start).Round(time.Second), *base, last, 100*(float64(last.Heap)/float64(base.Heap)-1), probe.goroutineDump())
	return settled{last, time.Since(start)}
}

// waitLive waits until the API reports name live.
func waitLive(t *testing.T, s server, name string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, name+" to be live", func() bool { return isLive(context.Background(), s, name) })
}

// isLive asks the API whether name has a publisher.
func isLive(ctx context.Context, s server, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	code, b, err := getBody(ctx, c, s.httpURL+"/api/v1/streams/"+name)
	return err == nil && code == http.StatusOK && strings.Contains(strings.Join(strings.Fields(string(b)), ""), `"live":true`)
}

// churn runs the restarting publishers, the viewer cycles (n of them,
// spread evenly over d, the protocols in turn), and the REST and
// Socket.IO clients for d, or until the n cycles are done if that takes
// longer (at most half as long again). Then it stops them all and
// returns the highest usage it saw.
func churn(t *testing.T, p plan, srv server, probe *prober, pubs []*publisher, st *stats, d time.Duration, n int) usage {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i, pb := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pb.run(ctx, p.restartEvery*time.Duration(i+1)/time.Duration(len(pubs)), p.restartEvery, st)
		}()
	}
	// Two REST clients and two Socket.IO clients at a time, each a new
	// one every 200 ms to 1 s.
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, cycleTimeout)
				var err error
				kind := "api"
				if i%2 == 0 {
					err = apiClient(cctx, srv, steadyName)
				} else {
					kind = "socket.io"
					err = socketIOClient(cctx, srv, steadyName, 2)
				}
				ccancel()
				st.add(kind, 0, err, ctx.Err() != nil)
				sleep(ctx, time.Duration(200+rand.IntN(800))*time.Millisecond)
			}
		}()
	}
	// The highest usage, every 5 s.
	var peak usage
	var peakMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleep(ctx, 5*time.Second) {
			u, err := probe.peek()
			if err != nil {
				continue
			}
			peakMu.Lock()
			peak.Goroutines, peak.FDs, peak.FFmpeg = max(peak.Goroutines, u.Goroutines), max(peak.FDs, u.FDs), max(peak.FFmpeg, u.FFmpeg)
			peakMu.Unlock()
		}
	}()

	start := time.Now()
	hard := time.Now().Add(d + d/2)
	sem := make(chan struct{}, p.concurrency)
	var cycles sync.WaitGroup
	for i := range n {
		if !sleep(ctx, time.Until(start.Add(d*time.Duration(i)/time.Duration(n)))) || time.Now().After(hard) {
			break
		}
		sem <- struct{}{}
		cycles.Add(1)
		go func() {
			defer cycles.Done()
			defer func() { <-sem }()
			proto := protocols[i%len(protocols)]
			cctx, ccancel := context.WithTimeout(ctx, cycleTimeout)
			defer ccancel()
			name, ok := pickStream(cctx, proto, pubs)
			if !ok {
				st.add(proto, 0, fmt.Errorf("no stream live long enough for %s within %v", proto, cycleTimeout), false)
				return
			}
			hold := time.Duration(rand.IntN(1500)) * time.Millisecond
			got, err := viewers[proto](cctx, srv, name, hold)
			if err != nil {
				err = fmt.Errorf("%s %s: %w", proto, name, err)
			}
			st.add(proto, got, err, false)
		}()
	}
	cycles.Wait()
	// The rest of d, if the cycles were done early.
	sleep(ctx, time.Until(start.Add(d)))
	cancel()
	wg.Wait()
	peakMu.Lock()
	defer peakMu.Unlock()
	return peak
}

// pickStream chooses a stream for a viewer of proto: the steady one or a
// restarting one live long enough that the viewer gets its media before
// the publisher stops (HLS takes longer: a new muxer's first segments).
// HLS viewers watch restarting streams only, whose muxers end with them,
// so that no muxer is left to time out in the quiet state.
func pickStream(ctx context.Context, proto string, pubs []*publisher) (string, bool) {
	left := 5 * time.Second
	if proto == protoHLS {
		left = 10 * time.Second
	}
	for {
		var names []string
		if proto != protoHLS {
			names = append(names, steadyName)
		}
		now := time.Now()
		for _, pb := range pubs {
			names = append(names, pb.live(now, left)...)
		}
		if len(names) > 0 {
			return names[rand.IntN(len(names))], true
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return "", false
		}
	}
}

// sleep waits d or until ctx is done, and reports whether ctx is still
// alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// publisher is an ffmpeg publishing one stream over RTMP, restarted
// again and again.
type publisher struct {
	name      string // APP/STREAM
	rendition string // the stream's transcoded rendition, if any
	input     string
	srv       server

	mu        sync.Mutex
	upSince   time.Time // when the stream (and its rendition) went live; zero while down
	renditOK  bool      // the rendition is live
	stopAt    time.Time // when the publisher stops
	incarnate int       // publishers started
}

// live returns the publisher's streams that are live and stay so for at
// least left.
func (pb *publisher) live(now time.Time, left time.Duration) []string {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.upSince.IsZero() || pb.stopAt.Sub(now) < left {
		return nil
	}
	if pb.renditOK {
		return []string{pb.name, pb.rendition}
	}
	return []string{pb.name}
}

func (pb *publisher) restarts() int {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	return max(pb.incarnate-1, 0)
}

// run publishes until ctx ends: the first life lasts first, the next
// every. Between two lives it waits 1 s (the stream goes on: its viewers
// wait for the publisher's return) or past the publisher grace (the
// stream ends and its viewers are told); the publisher is stopped with
// SIGINT (ffmpeg ends the stream) or SIGKILL (its connection drops).
func (pb *publisher) run(ctx context.Context, first, every time.Duration, st *stats) {
	life := first
	for k := 0; ctx.Err() == nil; k++ {
		cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
			"-re", "-stream_loop", "-1", "-i", pb.input, "-c", "copy", "-f", "flv", "rtmp://"+pb.srv.rtmpAddr+"/"+pb.name)
		if err := cmd.Start(); err != nil {
			st.add("publisher", 0, err, false)
			return
		}
		started := time.Now()
		pb.mu.Lock()
		pb.incarnate++
		pb.stopAt = started.Add(life)
		pb.mu.Unlock()
		err := pb.waitUp(ctx)
		st.add("publisher", 0, err, ctx.Err() != nil)
		sleep(ctx, time.Until(started.Add(life)))
		pb.mu.Lock()
		pb.upSince, pb.renditOK = time.Time{}, false
		pb.mu.Unlock()
		sig := syscall.SIGINT
		if k/2%2 == 1 {
			sig = syscall.SIGKILL
		}
		cmd.Process.Signal(sig)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		gap := time.Second
		if k%2 == 0 {
			gap = grace + 2*time.Second
		}
		sleep(ctx, gap)
		life = every
	}
}

// waitUp waits until the stream is live (and its rendition, if it has
// one), and marks it so.
func (pb *publisher) waitUp(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for !isLive(ctx, pb.srv, pb.name) {
		if time.Now().After(deadline) || !sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("%s not live 15 s after its publisher started", pb.name)
		}
	}
	pb.mu.Lock()
	pb.upSince = time.Now()
	pb.mu.Unlock()
	if pb.rendition == "" {
		return nil
	}
	deadline = time.Now().Add(30 * time.Second)
	for !isLive(ctx, pb.srv, pb.rendition) {
		if time.Now().After(deadline) || !sleep(ctx, 250*time.Millisecond) {
			return fmt.Errorf("%s not live 30 s after %s", pb.rendition, pb.name)
		}
	}
	pb.mu.Lock()
	pb.renditOK = true
	pb.mu.Unlock()
	return nil
}

// stats counts the cycles and clients by kind.
type stats struct {
	mu     sync.Mutex
	ok     map[string]int
	failed map[string]int
	frames map[string]int64
	errs   []string
}

// add counts one cycle of kind; an error once the churn is stopping
// (cancelled) is not a failure.
func (s *stats) add(kind string, got int64, err error, cancelled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.ok[kind]++
		s.frames[kind] += got
	case cancelled:
	default:
		s.failed[kind]++
		if len(s.errs) < 20 {
			s.errs = append(s.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
		}
	}
}

func (s *stats) firstErrors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

// counts is a copy of the stats' counts.
type counts struct {
	ok, failed map[string]int
	frames     map[string]int64
}

func (s *stats) snapshot() counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := counts{ok: map[string]int{}, failed: map[string]int{}, frames: map[string]int64{}}
	for k, v := range s.ok {
		c.ok[k] = v
	}
	for k, v := range s.failed {
		c.failed[k] = v
	}
	for k, v := range s.frames {
		c.frames[k] = v
	}
	return c
}

// minus is c less an earlier copy.
func (c counts) minus(o counts) counts {
	for k := range c.ok {
		c.ok[k] -= o.ok[k]
	}
	for k := range c.failed {
		c.failed[k] -= o.failed[k]
	}
	for k := range c.frames {
		c.frames[k] -= o.frames[k]
	}
	return c
}

// cycles is the viewer cycles counted, failed ones included.
func (c counts) cycles() int {
	n := 0
	for _, p := range protocols {
		n += c.ok[p] + c.failed[p]
	}
	return n
}

func (c counts) failures() int {
	n := 0
	for _, v := range c.failed {
		n += v
	}
	return n
}

func (c counts) String() string {
	var kinds []string
	for k := range c.ok {
		kinds = append(kinds, k)
	}
	for k := range c.failed {
		if _, ok := c.ok[k]; !ok {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s %d ok (%d media) %d failed; ", k, c.ok[k], c.frames[k], c.failed[k])
	}
	return b.String()
}
