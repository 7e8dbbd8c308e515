// Command httpload fetches one URL over and over on N keep-alive
// connections for a while, and reports what the server spent on it:
// requests and bytes per second, and the server process's CPU time per
// request and per megabyte (from -pid). bench/compare-hls.sh runs it
// against meshcast's live segments and playlists and against nginx serving
// copies of the same files.
//
// The client is as plain as it can be, one goroutine per connection, a
// request written and the answer's body discarded by Content-Length, so
// that one core drives a server that serves several gigabytes a second.
// One JSON line goes to standard output.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/procstat"
)

// Result is one run's figures.
type Result struct {
	Label         string  `json:"label,omitempty"`
	URL           string  `json:"url"`
	Conns         int     `json:"conns"`
	Seconds       float64 `json:"seconds"`
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	FirstError    string  `json:"first_error,omitempty"`
	RequestsPerS  float64 `json:"requests_per_s"`
	MBPerS        float64 `json:"mb_per_s"`
	BodyBytes     int64   `json:"body_bytes"` // of the last answer
	ServerCPUPct  float64 `json:"cpu_pct"`
	CPUusPerReq   float64 `json:"cpu_us_per_request"`
	CPUmsPerMB    float64 `json:"cpu_ms_per_mb"`
	LoadgenCPUPct float64 `json:"loadgen_cpu_pct"`
}

func main() {
	rawURL := flag.String("url", "", "URL to fetch (http://HOST:PORT/PATH)")
	conns := flag.Int("conns", 100, "keep-alive connections")
	d := flag.Duration("duration", 10*time.Second, "how long to measure")
	warm := flag.Duration("warmup", 2*time.Second, "load before measuring")
	pid := flag.Int("pid", 0, "server process to measure (0: none)")
	label := flag.String("label", "", "label of the JSON line")
	report := flag.String("report", "", "print a Markdown table of the JSON lines in this file (written by earlier runs) and exit")
	live := flag.Bool("live-segment", false, "-url is a live media playlist: fetch its newest segment, following the playlist as it moves on")
	flag.Parse()
	if *report != "" {
		if err := writeReport(os.Stdout, *report); err != nil {
			fmt.Fprintln(os.Stderr, "httpload:", err)
			os.Exit(1)
		}
		return
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" || *conns < 1 || *conns > 10000 {
		fmt.Fprintln(os.Stderr, "usage: httpload -url http://HOST:PORT/PATH [-conns N] [-duration D] [-pid PID]")
		os.Exit(2)
	}
	res, err := run(u, *conns, *warm, *d, *pid, *live)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpload:", err)
		os.Exit(1)
	}
	res.Label = *label
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
}

func run(u *url.URL, conns int, warm, d time.Duration, pid int, live bool) (*Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), warm+d+30*time.Second)
	defer cancel()
	var target atomic.Pointer[[]byte] // the request every connection sends
	request := func(t *url.URL) *[]byte {
		b := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshcast-httpload\r\n\r\n", t.RequestURI(), t.Host))
		return &b
	}
	target.Store(request(u))
	var follower sync.WaitGroup
	if live {
		seg, err := newest(ctx, u)
		if err != nil {
			return nil, err
		}
		target.Store(request(seg))
		follower.Add(1)
		go func() {
			defer follower.Done()
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
				if seg, err := newest(ctx, u); err == nil {
					target.Store(request(seg))
				}
			}
		}()
	}
	var requests, bytes, errs, last atomic.Int64
	var firstErr atomic.Value
	measuring := atomic.Bool{}
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := client(ctx, u.Host, &target, func(n int64) {
					last.Store(n)
					if measuring.Load() {
						requests.Add(1)
						bytes.Add(n)
					}
				})
				if err != nil && ctx.Err() == nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(warm)
	srv0, self0 := sample(pid)
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(d)
	measuring.Store(false)
	elapsed := time.Since(t0).Seconds()
	srv1, self1 := sample(pid)
	cancel()
	wg.Wait()
	follower.Wait()
	res := &Result{URL: u.String(), Conns: conns, Seconds: elapsed, Requests: requests.Load(), Errors: errs.Load(), BodyBytes: last.Load()}
	if v := firstErr.Load(); v != nil {
		res.FirstError = v.(string)
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("no request answered: %s", res.FirstError)
	}
	mb := float64(bytes.Load()) / 1e6
	res.RequestsPerS = float64(res.Requests) / elapsed
	res.MBPerS = mb / elapsed
	if pid > 0 {
		cpu := (srv1.CPU - srv0.CPU).Seconds()
		res.ServerCPUPct = 100 * cpu / elapsed
		res.CPUusPerReq = 1e6 * cpu / float64(res.Requests)
		res.CPUmsPerMB = 1e3 * cpu / mb
	}
	res.LoadgenCPUPct = 100 * (self1.CPU - self0.CPU).Seconds() / elapsed
	return res, nil
}

func sample(pid int) (srv, self procstat.Stat) {
	if pid > 0 {
		srv, _ = procstat.Read(pid)
	}
	self, _ = procstat.Read(0)
	return srv, self
}

// newest returns the URL of a media playlist's newest segment.
func newest(ctx context.Context, playlist *url.URL) (*url.URL, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, playlist.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", playlist, resp.Status)
	}
	last := ""
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			last = line
		}
	}
	if last == "" {
		return nil, fmt.Errorf("GET %s: no segment listed", playlist)
	}
	return playlist.Parse(last)
}

// client sends the target request over one connection again and again
// until ctx ends or the connection fails, calling done with each answer's
// body length.
func client(ctx context.Context, addr string, target *atomic.Pointer[[]byte], done func(int64)) error {
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := bufio.NewReaderSize(conn, 64<<10)
	for ctx.Err() == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(*target.Load()); err != nil {
			return err
		}
		status, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if !strings.Contains(string(status), " 200 ") {
			return fmt.Errorf("status %q", strings.TrimSpace(string(status)))
		}
		length, chunked := int64(-1), false
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) <= 2 {
				break
			}
			k, v, ok := strings.Cut(string(line), ":")
			if ok && strings.EqualFold(strings.TrimSpace(k), "transfer-encoding") {
				chunked = strings.Contains(strings.ToLower(v), "chunked")
			}
			if ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
				if length, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
					return err
				}
			}
		}
		if chunked {
			n, err := io.Copy(io.Discard, httputil.NewChunkedReader(br))
			if err != nil {
				return err
			}
			// The trailer, which ends with an empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(line) <= 2 {
					break
				}
			}
			done(n)
			continue
		}
		if length < 0 {
			return errors.New("answer without Content-Length")
		}
		if _, err := br.Discard(int(length)); err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		done(length)
	}
	return nil
}

// writeReport writes a Markdown table of the results in path, each run
// labelled server=S,file=F, and each server's CPU per request against
// that of nginx-static (nginx serving the same files) for the same file.
func writeReport(w io.Writer, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	type key struct{ server, file string }
	var order []key
	byKey := map[key]Result{}
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		k := key{}
		for kv := range strings.SplitSeq(r.Label, ",") {
			name, v, _ := strings.Cut(kv, "=")
			switch name {
			case "server":
				k.server = v
			case "file":
				k.file = v
			}
		}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = r
	}
	fmt.Fprintln(w, "| server | file | bytes | connections | requests/s | MB/s | server CPU % | CPU µs per request | CPU ms per MB | CPU per request, × nginx-static's | errors |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range order {
		r := byKey[k]
		ratio := "–"
		if ref, ok := byKey[key{"nginx-static", k.file}]; ok && ref.CPUusPerReq > 0 {
			ratio = fmt.Sprintf("%.2f×", r.CPUusPerReq/ref.CPUusPerReq)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %.1f | %.0f | %.1f | %.3f | %s | %d |\n",
			k.server, k.file, r.BodyBytes, r.Conns, r.RequestsPerS, r.MBPerS, r.ServerCPUPct, r.CPUusPerReq, r.CPUmsPerMB, ratio, r.Errors)
	}
	return nil
}
