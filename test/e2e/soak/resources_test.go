//go:build unix

package soak

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// usage is what the soak measures of the server process.
type usage struct {
	Goroutines int    // go_goroutines, less the one serving the scrape
	FDs        int    // entries of /proc/PID/fd
	FFmpeg     int    // ffmpeg processes whose parent is the server
	Heap       uint64 // HeapAlloc right after a forced garbage collection, bytes
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d open files, %d ffmpeg children, heap %.1f MiB",
		u.Goroutines, u.FDs, u.FFmpeg, float64(u.Heap)/(1<<20))
}

// prober reads a server process's usage. Every request goes on a
// connection of its own, closed with the answer, so that the prober
// leaves no idle connection (and no goroutine or descriptor) behind in
// the server between two readings.
type prober struct {
	pid    int
	url    string // http://127.0.0.1:PORT of the server, started with --pprof
	client *http.Client
}

func newProber(pid int, httpURL string) *prober {
	return &prober{pid: pid, url: httpURL, client: &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

// get fetches path and returns the body, at most limit bytes.
func (p *prober) get(path string, limit int64) (string, error) {
	resp, err := p.client.Get(p.url + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// read takes one reading. The descriptors and children are counted from
// /proc before any request; the goroutines come from /metrics (the
// Prometheus Go collector), less the goroutine serving that request; the
// heap from Go's heap profile, whose gc=1 runs a collection first. The
// heap is the least of readings over 3 s: the steady stream's GOP cache,
// a live part of the heap, grows from one keyframe to the next (2 s
// apart) and would otherwise make two readings differ by where in its
// GOP the stream was.
func (p *prober) read() (usage, error) {
	u, err := p.peek()
	if err != nil {
		return u, err
	}
	for i := range 6 {
		if i > 0 {
			time.Sleep(600 * time.Millisecond)
		}
		heap, err := p.get("/debug/pprof/heap?gc=1&debug=1", 64<<20)
		if err != nil {
			return u, err
		}
		v, ok := memstat(heap, "HeapAlloc")
		if !ok {
			return u, fmt.Errorf("the heap profile has no HeapAlloc")
		}
		if i == 0 || v < u.Heap {
			u.Heap = v
		}
	}
	return u, nil
}

// peek reads the goroutines, descriptors and children, without a
// collection.
func (p *prober) peek() (usage, error) {
	var u usage
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
	if err != nil {
		return u, err
	}
	u.FDs = len(fds)
	if u.FFmpeg, err = ffmpegChildren(p.pid); err != nil {
		return u, err
	}
	metrics, err := p.get("/metrics", 8<<20)
	if err != nil {
		return u, err
	}
	g, ok := sample(metrics, "go_goroutines")
	if !ok {
		return u, fmt.Errorf("/metrics has no go_goroutines")
	}
	u.Goroutines = int(g) - 1
	return u, nil
}

// saveHeap writes the server's heap profile (after a collection) to
// dir/heap-NAME.pb.gz, for go tool pprof -base.
func (p *prober) saveHeap(dir, name string) error {
	b, err := p.get("/debug/pprof/heap?gc=1", 64<<20)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "heap-"+name+".pb.gz"), []byte(b), 0o644)
}

// goroutineDump returns the server's goroutines grouped by stack.
func (p *prober) goroutineDump() string {
	s, err := p.get("/debug/pprof/goroutine?debug=1", 8<<20)
	if err != nil {
		return err.Error()
	}
	return s
}

// sample returns the value of an unlabelled series of a Prometheus text
// exposition.
func sample(text, name string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// memstat returns a runtime.MemStats field from the "# Name = value"
// lines that end a heap profile read with debug=1.
func memstat(profile, name string) (uint64, bool) {
	i := strings.LastIndex(profile, "\n# "+name+" = ")
	if i < 0 {
		return 0, false
	}
	rest := profile[i+len("\n# "+name+" = "):]
	if j := strings.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	v, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
	return v, err == nil
}

// ffmpegChildren counts the ffmpeg processes whose parent is pid.
func ffmpegChildren(pid int) (int, error) {
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // ended since the listing
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid && s[open+1:end] == "ffmpeg" {
			n++
		}
	}
	return n, nil
}
