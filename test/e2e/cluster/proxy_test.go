//go:build unix

package cluster

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy forwards TCP connections on loopback to a server, with the
// faults a test turns on: each byte the server sends held for delay (a
// store that far away; what clients send goes through at once), and Cut,
// a partition's blackhole: from then on its connections stay open, what
// either side sends is read and dropped, and new connections are accepted
// and never answered. No reset, no close, only silence.
type faultProxy struct {
	ln       net.Listener
	upstream string
	delay    time.Duration
	cut      atomic.Bool
	open     atomic.Int32 // connections forwarded now
	most     atomic.Int32 // the most forwarded at once

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

// startProxy listens on addr ("127.0.0.1:0", or another loopback address:
// any answers on Linux), forwards to upstream with replies held for delay,
// and stops when the test ends, closing every connection it forwards.
func startProxy(t *testing.T, addr, upstream string, delay time.Duration) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, upstream: upstream, delay: delay}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

// Addr is host:port to dial instead of the server's.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// Most is the most connections the proxy forwarded at once; one counts
// until its client's side has ended.
func (p *faultProxy) Most() int { return int(p.most.Load()) }

// Cut blackholes the proxy from now on.
func (p *faultProxy) Cut() { p.cut.Store(true) }

func (p *faultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		var u net.Conn
		if !p.cut.Load() {
			if u, err = net.DialTimeout("tcp", p.upstream, 2*time.Second); err != nil {
				c.Close()
				continue
			}
		}
		if !p.track(c, u) {
			return
		}
		if u == nil {
			p.wg.Go(func() { io.Copy(io.Discard, c) })
			continue
		}
		n := p.open.Add(1)
		for m := p.most.Load(); n > m && !p.most.CompareAndSwap(m, n); m = p.most.Load() {
		}
		p.wg.Go(func() { p.pipe(u, c, 0); p.open.Add(-1) })
		p.wg.Go(func() { p.pipe(c, u, p.delay) })
	}
}

// pipe copies from src to dst until either ends, each read passed on
// delay after it arrived, in order, and drops what src sends once the
// proxy is cut.
func (p *faultProxy) pipe(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	chunks := make(chan chunk, 4096)
	p.wg.Go(func() {
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !p.cut.Load() {
				chunks <- chunk{append([]byte(nil), buf[:n]...), time.Now()}
			}
			if err != nil {
				return
			}
		}
	})
	broken := false
	for ch := range chunks {
		if broken {
			continue // drain, so the reader never blocks
		}
		time.Sleep(time.Until(ch.at.Add(delay)))
		dst.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := dst.Write(ch.b); err != nil {
			broken = true
			src.Close()
		}
	}
	if !p.cut.Load() {
		dst.Close()
		src.Close()
	}
}

// track registers the ends of a forwarded connection (u is nil once
// cut), false (all closed) once the proxy is closing.
func (p *faultProxy) track(c, u net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		if u != nil {
			u.Close()
		}
		return false
	}
	p.conns = append(p.conns, c)
	if u != nil {
		p.conns = append(p.conns, u)
	}
	return true
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
