package hls

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/procstat"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// The benchmarks serve a live stream of about 1.5 Mbit/s (640x360 H.264
// with a keyframe every second, and AAC) over loopback HTTP to keep-alive
// clients, the way players fetch it: a segment of about 180 KB, the media
// playlist, and low-latency blocking playlist reloads. Besides ns/op they
// report cpu-ns/op, the process's CPU time (server and clients) per
// operation.

// benchSource is a 4-second FLV file, made once per process.
var benchSource struct {
	once sync.Once
	pkts []media.Packet
	err  error
}

func benchPackets(b testing.TB) []media.Packet {
	b.Helper()
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		b.Skip("ffmpeg not installed")
	}
	benchSource.once.Do(func() {
		dir, err := os.MkdirTemp("", "hlsbench")
		if err != nil {
			benchSource.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "bench.flv")
		cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
			"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
			"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "4",
			"-c:v", "libx264", "-preset", "veryfast", "-b:v", "1400k", "-maxrate", "1400k", "-bufsize", "700k",
			"-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
			"-c:a", "aac", "-b:a", "64k", "-f", "flv", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			benchSource.err = fmt.Errorf("ffmpeg: %v\n%s", err, b)
			return
		}
		benchSource.pkts, benchSource.err = readFLV(out)
	})
	if benchSource.err != nil {
		b.Fatal(benchSource.err)
	}
	return benchSource.pkts
}

// benchFeed writes a looped FLV file into a stream, rounds after the
// first shifted in time so that the stream goes on.
type benchFeed struct {
	pub   *stream.Publisher
	pkts  []media.Packet
	span  int64
	clock int64 // stream time added to the current round
	i     int
	round int
}

func newBenchFeed(b testing.TB, st *stream.Stream, pkts []media.Packet) *benchFeed {
	b.Helper()
	pub, err := st.Attach(stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		b.Fatal(err)
	}
	fd := &benchFeed{pub: pub, pkts: pkts}
	for _, p := range pkts {
		fd.span = max(fd.span, p.DTS+34)
	}
	return fd
}

// next writes the next packet and returns its stream time.
func (fd *benchFeed) next() (int64, error) {
	for {
		if fd.i == len(fd.pkts) {
			fd.i, fd.round = 0, fd.round+1
			fd.clock += fd.span
		}
		p := fd.pkts[fd.i]
		fd.i++
		if fd.round > 0 && (p.SeqHeader || p.Kind == media.KindData) {
			continue
		}
		p.DTS += fd.clock
		return p.DTS, fd.pub.WritePacket(&p)
	}
}

// run writes packets paced at speed times real time until ctx ends.
func (fd *benchFeed) run(ctx context.Context, speed float64) error {
	start := time.Now()
	var first int64 = -1
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		dts, err := fd.next()
		if err != nil {
			return err
		}
		if first < 0 {
			first = dts
		}
		timer.Reset(time.Until(start.Add(time.Duration(float64(dts-first)/speed) * time.Millisecond)))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// benchServer is a fixture whose stream has six seconds of media and,
// with live set, goes on being fed at real time. It returns the name of
// the video's media playlist.
func benchServer(b testing.TB, cfg Config, live bool) (*fixture, string) {
	b.Helper()
	pkts := benchPackets(b)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	name, err := streamname.New("live", "test")
	if err != nil {
		b.Fatal(err)
	}
	st := stream.New(name, stream.Config{})
	hub := &testutil.Streams{}
	hub.Put(st)
	srv := New(cfg, hub)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		file := strings.TrimPrefix(r.URL.Path, "/live/test/")
		srv.ServeStream(w, r, name, file)
	}))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute}}
	f := &fixture{srv: srv, http: hs, client: client, st: st}
	if t, ok := b.(*testing.T); ok {
		f.t = t
	}
	got := make(chan string, 1)
	go func() {
		resp, err := client.Get(f.url("index.m3u8"))
		if err != nil {
			got <- ""
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(body)
	}()
	testutil.WaitFor(b, 10*time.Second, "the request to start a muxer", func() bool { return f.muxer() != nil })
	fd := newBenchFeed(b, f.st, pkts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// Six seconds of media at once, then real time if live.
	go func() {
		defer close(done)
		for {
			dts, err := fd.next()
			if err != nil || dts > 6000 || ctx.Err() != nil {
				break
			}
			if fd.i%20 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if live {
			fd.run(ctx, 1)
		}
	}()
	b.Cleanup(func() {
		cancel()
		<-done
		fd.pub.Close()
		f.st.Close()
		f.srv.Close()
		f.http.Close()
		client.CloseIdleConnections()
	})
	index := <-got
	media := regexp.MustCompile(`(?m)^\S+_stream\.m3u8$`).FindString(index)
	if media == "" {
		b.Fatalf("index.m3u8: %q", index)
	}
	// Wait for the media written at once to be muxed.
	testutil.WaitFor(b, 10*time.Second, "4 segments listed", func() bool {
		_, _, pl := benchGet(b, client, f.url(media))
		return len(segmentLine.FindAllString(pl, -1)) >= 4
	})
	return f, media
}

var segmentLine = regexp.MustCompile(`(?m)^video1_[0-9a-f]{8}_s\d+\.mp4`)

func benchGet(b testing.TB, c *http.Client, url string) (int, int, string) {
	b.Helper()
	code, body, err := benchTry(c, url)
	if err != nil {
		b.Fatal(err)
	}
	return code, len(body), body
}

func benchTry(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body), err
}

// cpuTime is the process's CPU time so far.
func cpuTime() time.Duration {
	st, _ := procstat.Read(0)
	return st.CPU
}

// benchFetch fetches url over and over from 100 keep-alive clients.
func benchFetch(b *testing.B, client *http.Client, url string, wantLen int) {
	var failed atomic.Int64
	b.SetParallelism(max(1, 100/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.SetBytes(int64(wantLen))
	cpu := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 64<<10)
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				failed.Add(1)
				continue
			}
			n := 0
			for {
				k, err := resp.Body.Read(buf)
				n += k
				if err != nil {
					break
				}
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n == 0 {
				failed.Add(1)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
}

// BenchmarkSegment: one live segment of about 180 KB fetched over and
// over by 100 keep-alive clients.
func BenchmarkSegment(b *testing.B) {
	f, media := benchServer(b, Config{SegmentCount: 20}, false)
	_, _, pl := benchGet(b, f.client, f.url(media))
	segs := segmentLine.FindAllString(pl, -1)
	seg := segs[len(segs)-1]
	code, n, _ := benchGet(b, f.client, f.url(seg))
	if code != http.StatusOK {
		b.Fatalf("%s: %d", seg, code)
	}
	b.Logf("segment %s: %d bytes", seg, n)
	benchFetch(b, f.client, f.url(seg), n)
}

// BenchmarkPlaylist: the media playlist fetched over and over by 100
// keep-alive clients, for HLS and low-latency HLS, without and with a
// signed URL's query.
func BenchmarkPlaylist(b *testing.B) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		query string
	}{
		{"hls", Config{}, ""},
		{"hls-signed", Config{}, "?expires=1700000000&sig=0123456789abcdef"},
		{"llhls", Config{LowLatency: true}, ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f, media := benchServer(b, tc.cfg, false)
			code, n, _ := benchGet(b, f.client, f.url(media+tc.query))
			if code != http.StatusOK {
				b.Fatalf("%s: %d", media, code)
			}
			benchFetch(b, f.client, f.url(media+tc.query), n)
		})
	}
}

// BenchmarkBlockingReload: N low-latency players parked in a blocking
// playlist reload for the next part, all answered when it exists; an
// operation is one part. The stream is fed at real time, so ns/op is the
// part duration; cpu-ns/op is what the part's N answers cost, and
// spread-ms the time from the first answer to the last.
func BenchmarkBlockingReload(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			f, media := benchServer(b, Config{LowLatency: true, RequestTimeout: 10 * time.Second}, true)
			url := f.url(media)
			var spreads []time.Duration
			b.ReportAllocs()
			cpu := cpuTime()
			b.ResetTimer()
			for range b.N {
				_, _, pl := benchGet(b, f.client, url)
				msn, part := llNextPart(pl)
				target := fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", url, msn, part)
				var wg sync.WaitGroup
				var failed atomic.Int64
				times := make([]time.Time, n)
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						code, body, err := benchTry(f.client, target)
						times[i] = time.Now()
						if gm, gp := llNextPart(body); err != nil || code != http.StatusOK || gm*1000+gp <= msn*1000+part {
							failed.Add(1)
						}
					}()
				}
				wg.Wait()
				if k := failed.Load(); k > 0 {
					b.Fatalf("%d of %d blocking reloads failed", k, n)
				}
				sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
				spreads = append(spreads, times[n-1].Sub(times[0]))
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			sort.Slice(spreads, func(i, j int) bool { return spreads[i] < spreads[j] })
			b.ReportMetric(float64(spreads[len(spreads)/2])/1e6, "spread-p50-ms")
			b.ReportMetric(float64(spreads[len(spreads)*99/100])/1e6, "spread-p99-ms")
		})
	}
}

var mediaSequence = regexp.MustCompile(`#EXT-X-MEDIA-SEQUENCE:(\d+)`)

// llNextPart returns the media sequence number and part index of the part
// after the last one a low-latency playlist (or delta update) lists.
func llNextPart(playlist string) (msn, part int) {
	m := mediaSequence.FindStringSubmatch(playlist)
	if m == nil {
		return -1, -1
	}
	msn, _ = strconv.Atoi(m[1])
	for len(playlist) > 0 {
		var ln string
		ln, playlist, _ = strings.Cut(playlist, "\n")
		switch {
		case strings.HasPrefix(ln, "#EXT-X-SKIP:SKIPPED-SEGMENTS="):
			n, _ := strconv.Atoi(ln[len("#EXT-X-SKIP:SKIPPED-SEGMENTS="):])
			msn += n
		case strings.HasPrefix(ln, "#EXT-X-PART:"):
			part++
		case ln != "" && ln[0] != '#':
			msn++
			part = 0
		}
	}
	return msn, part
}

// discardWriter is a ResponseWriter that keeps nothing, for measuring the
// handler alone.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *discardWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(b)
	return len(b), nil
}

// BenchmarkHandler: the server's handler alone, without HTTP, answering
// a segment, the media playlist and a low-latency media playlist's delta
// update from one goroutine per core: what meshcast itself spends per
// request, besides net/http's and the kernel's part.
func BenchmarkHandler(b *testing.B) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		file  string // "": the newest segment
		query string
	}{
		{"segment", Config{SegmentCount: 20}, "", ""},
		{"playlist", Config{}, "media", ""},
		{"playlist-signed", Config{}, "media", "expires=1700000000&sig=0123456789abcdef"},
		{"llhls-delta", Config{LowLatency: true}, "media", "_HLS_skip=YES"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f, media := benchServer(b, tc.cfg, false)
			file := media
			if tc.file == "" {
				_, _, pl := benchGet(b, f.client, f.url(media))
				segs := segmentLine.FindAllString(pl, -1)
				file = segs[len(segs)-1]
			}
			name := f.st.Name()
			target := "/live/test/" + file
			if tc.query != "" {
				target += "?" + tc.query
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := httptest.NewRequest(http.MethodGet, target, nil)
				for pb.Next() {
					w := &discardWriter{h: make(http.Header)}
					f.srv.ServeStream(w, r, name, file)
					if w.code != http.StatusOK || w.n == 0 {
						b.Errorf("%s: %d, %d bytes", target, w.code, w.n)
						return
					}
				}
			})
		})
	}
}
