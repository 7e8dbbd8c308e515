//go:build unix

package e2eutil

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
)

// FLVViewer is a real HTTP-FLV client: it reads the stream's tags and
// counts what it receives.
type FLVViewer struct {
	Bytes  atomic.Int64 // bytes received
	Video  atomic.Int64 // video frames received, decoder configurations aside
	LastTS atomic.Int64 // the latest video timestamp, ms; -1 before the first
	BackTS atomic.Int64 // times a video timestamp went backwards
	Gaps   Gaps         // wall-clock gaps between video frames
	Err    atomic.Value // the error that ended the reader
	cancel context.CancelFunc
	done   chan struct{}
}

// Gaps tracks the longest wall-clock pause between two video frames.
type Gaps struct {
	last atomic.Int64 // Unix ns of the latest frame; 0 before the first
	max  atomic.Int64 // ns
}

// frame notes a video frame's arrival now.
func (g *Gaps) frame() {
	now := time.Now().UnixNano()
	if last := g.last.Swap(now); last != 0 && now-last > g.max.Load() {
		g.max.Store(now - last)
	}
}

// Max returns the longest gap between two frames since the last Reset,
// counting the time since the latest frame as one.
func (g *Gaps) Max() time.Duration {
	m := g.max.Load()
	if last := g.last.Load(); last != 0 {
		m = max(m, time.Now().UnixNano()-last)
	}
	return time.Duration(m)
}

// Reset forgets the gaps so far.
func (g *Gaps) Reset() { g.max.Store(0) }

// PlayFLV starts an HTTP-FLV player of url, failing the test unless the
// answer is 200 with Content-Type video/x-flv. Close stops it.
func PlayFLV(t *testing.T, url string) *FLVViewer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v := &FLVViewer{cancel: cancel, done: make(chan struct{})}
	v.LastTS.Store(-1)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/x-flv" {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	go func() {
		defer close(v.done)
		defer resp.Body.Close()
		r := flv.NewReader(bufio.NewReaderSize(resp.Body, 32<<10))
		if _, _, err := r.ReadHeader(); err != nil {
			v.Err.Store(err)
			return
		}
		v.Bytes.Add(13)
		for {
			typ, ts, body, err := r.ReadTag()
			if err != nil {
				v.Err.Store(err)
				return
			}
			v.Bytes.Add(int64(11 + len(body) + 4))
			if typ != 9 {
				continue
			}
			if p, err := flv.ParseVideo(ts, body); err != nil || p.SeqHeader {
				continue
			}
			v.Video.Add(1)
			v.Gaps.frame()
			if int64(ts) < v.LastTS.Load() {
				v.BackTS.Add(1)
			}
			v.LastTS.Store(int64(ts))
		}
	}()
	return v
}

// Close stops the player and waits for its reader to end.
func (v *FLVViewer) Close() { v.cancel(); <-v.done }

// FLVStarts fetches url and reads the start of the FLV stream, returning the
// status; 0 if the request failed.
func FLVStarts(url string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		var hdr [13]byte // FLV header and PreviousTagSize0
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil || string(hdr[:3]) != "FLV" {
			return 0
		}
	}
	return resp.StatusCode
}

// RTMPViewer is a Go RTMP player that counts what it receives.
type RTMPViewer struct {
	Conn    net.Conn      // the player's connection
	Video   atomic.Int64  // video frames received, decoder configurations aside
	Audio   atomic.Int64  // audio messages received
	LastTS  atomic.Int64  // the latest video timestamp, ms; -1 before the first
	BackTS  atomic.Int64  // times a video timestamp went backwards
	Ended   atomic.Bool   // the server said the stream ended
	Err     atomic.Value  // the error that ended the reader
	Done    chan struct{} // closed when the reader ends
	Stalled atomic.Bool   // set: the player stops reading until closed
	Gaps    Gaps          // wall-clock gaps between video frames
	resume  chan struct{}
}

// PlayRTMP connects a Go RTMP player to name at addr, and closes it when
// the test ends.
func PlayRTMP(t *testing.T, addr, name string) *RTMPViewer {
	t.Helper()
	v, err := DialRTMPViewer(addr, name)
	if err != nil {
		t.Fatalf("play %s: %v", name, err)
	}
	t.Cleanup(v.Close)
	return v
}

// DialRTMPViewer connects a Go RTMP player to name at addr; the caller
// closes it.
func DialRTMPViewer(addr, name string) (*RTMPViewer, error) {
	return DialRTMPViewerFrom(nil, addr, name)
}

// DialRTMPViewerFrom is DialRTMPViewer from the loopback address ip (nil:
// any).
func DialRTMPViewerFrom(ip net.IP, addr, name string) (*RTMPViewer, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := StartPlaying(conn, addr, name)
	if err != nil {
		conn.Close()
		return nil, err
	}
	v := &RTMPViewer{Conn: conn, Done: make(chan struct{}), resume: make(chan struct{})}
	v.LastTS.Store(-1)
	go v.run(c)
	return v, nil
}

// StartPlaying connects an RTMP client on conn to addr and plays name
// (APP/STREAM, perhaps with ?parameters), within 15 s. With fourCCs it
// is an enhanced RTMP client taking those codecs.
func StartPlaying(conn net.Conn, addr, name string, fourCCs ...string) (*rtmp.Client, error) {
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	defer conn.SetDeadline(time.Time{})
	app, key, _ := strings.Cut(name, "/")
	c, err := rtmp.NewClient(conn)
	if err == nil {
		c.FourCCs = fourCCs
		err = c.Connect(app, fmt.Sprintf("rtmp://%s/%s", addr, app))
	}
	if err == nil {
		err = c.Play(key)
	}
	return c, err
}

func (v *RTMPViewer) run(c *rtmp.Client) {
	defer close(v.Done)
	for {
		if v.Stalled.Load() {
			<-v.resume
		}
		v.Conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		m, err := c.ReadMessage()
		if err != nil {
			v.Err.Store(err)
			return
		}
		switch m.Type {
		case rtmp.TypeVideo:
			p, err := flv.ParseVideo(m.Timestamp, m.Payload)
			if err != nil || p.SeqHeader {
				continue
			}
			v.Video.Add(1)
			v.Gaps.frame()
			if last := v.LastTS.Load(); int64(m.Timestamp) < last {
				v.BackTS.Add(1)
			}
			v.LastTS.Store(int64(m.Timestamp))
		case rtmp.TypeAudio:
			v.Audio.Add(1)
		case rtmp.TypeCommandAMF0:
			if cmd, err := rtmp.ParseCommand(m.Payload); err == nil && cmd.Name == "onStatus" {
				if bytes.Contains(m.Payload, []byte("NetStream.Play.UnpublishNotify")) {
					v.Ended.Store(true)
				}
			}
		}
	}
}

// Close disconnects the player and waits for its reader to end.
func (v *RTMPViewer) Close() {
	v.Conn.Close()
	if v.Stalled.CompareAndSwap(true, false) {
		close(v.resume)
	}
	<-v.Done
}

// WaitFrames waits until the viewer has received at least n more video
// frames than it had when called.
func (v *RTMPViewer) WaitFrames(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	start := v.Video.Load()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%d more video frames (have %d)", n, v.Video.Load()-start), func() bool {
		return v.Video.Load()-start >= n
	})
}
