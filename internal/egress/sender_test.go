//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package egress

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
)

// loopbackPairs returns n connected TCP pairs on 127.0.0.1: the server ends
// (written by a Sender) and the client ends (the viewers).
func loopbackPairs(t *testing.T, n int) (srv, cli []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		srv, cli = append(srv, s), append(cli, c)
		t.Cleanup(func() { c.Close(); s.Close() })
	}
	return srv, cli
}

// ended collects why each viewer's sending ended.
type ended chan error

func (e ended) wait(t *testing.T, n int, timeout time.Duration) []error {
	t.Helper()
	var errs []error
	deadline := time.After(timeout)
	for len(errs) < n {
		select {
		case err := <-e:
			errs = append(errs, err)
		case <-deadline:
			t.Fatalf("%d of %d viewers ended within %v", len(errs), n, timeout)
		}
	}
	return errs
}

// A playing viewer costs no goroutine: the sender's workers write to it and
// read what it sends, and the viewer receives every byte of the stream.
func TestSenderViewersCostNoGoroutine(t *testing.T) {
	const viewers = 50
	s, p := newPublished(t, stream.Config{})
	write(t, p, vcfg(0), acfg(0))
	srv, cli := loopbackPairs(t, viewers)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, viewers)

	before := runtime.NumGoroutine()
	for i := range viewers {
		r, err := s.NewReader("test")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		snd.Send(context.Background(), r, testFormat, srv[i], stream.PumpConfig{MergeWindow: 20 * time.Millisecond}, func(err error) { done <- err })
	}
	dts := gop(t, p, 0, 10)
	if grew := runtime.NumGoroutine() - before; grew > 2 {
		t.Errorf("%d viewers added %d goroutines, want none", viewers, grew)
	}
	// Every viewer gets the configuration and the GOP, byte for byte.
	want := (1 + len(avcC)) + (1 + len(asc)) + 10*(1+1000) + 10*(1+300)
	for i, c := range cli {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, want)); err != nil {
			t.Fatalf("viewer %d: %v", i, err)
		}
	}
	// What viewers send is read and dropped; it ends nobody.
	for _, c := range cli {
		c.Write(make([]byte, 4000))
	}
	time.Sleep(readEvery + 100*time.Millisecond)
	gop(t, p, dts, 2)
	for i, c := range cli {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 2*(1+1000)+2*(1+300))); err != nil {
			t.Fatalf("viewer %d after sending bytes: %v", i, err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a viewer ended: %v", err)
	default:
	}
}

// A viewer that hangs up is noticed while the stream is quiet, and the
// others carry on.
func TestSenderNoticesHangUp(t *testing.T) {
	s, p := newPublished(t, stream.Config{})
	write(t, p, vcfg(0), acfg(0))
	dts := gop(t, p, 0, 2)
	srv, cli := loopbackPairs(t, 2)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 2)
	for i := range srv {
		r, _ := s.NewReader("test")
		defer r.Close()
		snd.Send(context.Background(), r, testFormat, srv[i], stream.PumpConfig{MergeWindow: 20 * time.Millisecond}, func(err error) { done <- err })
	}
	cli[0].Close()
	errs := done.wait(t, 1, 2*readEvery+time.Second)
	if !errors.Is(errs[0], ErrHungUp) {
		t.Errorf("hung-up viewer ended with %v, want ErrHungUp", errs[0])
	}
	gop(t, p, dts, 1)
	cli[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cli[1], make([]byte, (1+len(avcC))+(1+len(asc))+3*(1+1000)+3*(1+300))); err != nil {
		t.Fatalf("other viewer: %v", err)
	}
	snd.Close()
	if errs := done.wait(t, 1, 5*time.Second); !errors.Is(errs[0], context.Canceled) {
		t.Errorf("after Close: %v, want context.Canceled", errs[0])
	}
}

// hiddenConn hides a connection's socket, as a TLS connection does.
type hiddenConn struct{ net.Conn }

// A connection without a socket to write directly (TLS) is pumped from a
// goroutine of its own, with the same service: what the viewer sends is
// read and dropped, a hang-up is noticed while the stream is quiet, the
// bytes are counted, and Close ends it.
func TestSenderWithoutRawSocket(t *testing.T) {
	s, p := newPublished(t, stream.Config{})
	write(t, p, vcfg(0), acfg(0))
	dts := gop(t, p, 0, 2)
	srv, cli := loopbackPairs(t, 2)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 2)
	for i := range srv {
		r, _ := s.NewReader("test")
		defer r.Close()
		snd.Send(context.Background(), r, testFormat, hiddenConn{srv[i]}, stream.PumpConfig{MergeWindow: 20 * time.Millisecond}, func(err error) { done <- err })
	}
	// More than the sockets' buffers hold: it goes through only if read.
	cli[1].SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := cli[1].Write(make([]byte, 16<<20)); err != nil {
		t.Fatalf("what the viewer sends is not read: %v", err)
	}
	cli[0].Close()
	if errs := done.wait(t, 1, time.Second); !errors.Is(errs[0], ErrHungUp) {
		t.Errorf("hung-up viewer ended with %v, want ErrHungUp", errs[0])
	}
	gop(t, p, dts, 1)
	want := (1 + len(avcC)) + (1 + len(asc)) + 3*(1+1000) + 3*(1+300)
	if _, err := io.ReadFull(cli[1], make([]byte, want)); err != nil {
		t.Fatalf("other viewer: %v", err)
	}
	if got := snd.BytesSent(); got < uint64(want) {
		t.Errorf("BytesSent %d, want at least the %d bytes one viewer received", got, want)
	}
	snd.Close()
	if errs := done.wait(t, 1, 5*time.Second); !errors.Is(errs[0], context.Canceled) {
		t.Errorf("after Close: %v, want context.Canceled", errs[0])
	}
}

// framedFormat writes a packet as its timestamp, its length and its
// payload, so a viewer can check every packet arrived whole.
var framedFormat = stream.NewFormat("framed", func(p *media.Packet) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(p.DTS))
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.Payload)))
	return append(b, p.Payload...)
})

// patterned is a video frame whose payload is derived from its timestamp.
func patterned(dts int64, key bool, size int) *media.Packet {
	pkt := vframe(dts, key, size)
	for i := range pkt.Payload {
		pkt.Payload[i] = byte(dts*7 + int64(i)*13 + 1) // never a run of zeros
	}
	return pkt
}

// readFramed reads one framedFormat packet from c and checks its payload
// is the configuration or patterned's for its timestamp.
func readFramed(c net.Conn) (dts int64, size int, err error) {
	var hdr [12]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, 0, err
	}
	dts = int64(binary.BigEndian.Uint64(hdr[:]))
	payload := make([]byte, binary.BigEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(c, payload); err != nil {
		return 0, 0, fmt.Errorf("reading packet %d: %w", dts, err)
	}
	if bytes.Equal(payload, avcC) {
		return dts, len(payload), nil
	}
	for i, b := range payload {
		if want := byte(dts*7 + int64(i)*13 + 1); b != want {
			return 0, 0, fmt.Errorf("packet %d byte %d of %d is %#x, want %#x", dts, i, len(payload), b, want)
		}
	}
	return dts, len(payload), nil
}

// Large batches go out from the stream's wire file with sendfile, byte for
// byte what memory holds, while the file's old pages are released behind
// them.
func TestSenderFromWireFile(t *testing.T) {
	const frames, size = 500, 20 << 10
	s, p := newPublished(t, stream.Config{MaxBytes: 256 << 10, MaxLag: time.Hour})
	write(t, p, vcfg(0))
	srv, cli := loopbackPairs(t, 1)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 1)
	r, _ := s.NewReader("test")
	defer r.Close()
	snd.Send(context.Background(), r, framedFormat, srv[0], stream.PumpConfig{}, func(err error) { done <- err })

	for i := range frames {
		dts := int64(1 + i*33)
		write(t, p, patterned(dts, i%30 == 0, size))
		if i == 0 { // the configuration comes first
			if _, n, err := readFramed(cli[0]); err != nil || n != len(avcC) {
				t.Fatalf("first packet: %d bytes, %v; want the configuration", n, err)
			}
		}
		got, n, err := readFramed(cli[0])
		if err != nil {
			t.Fatal(err)
		}
		if got != dts || n != size {
			t.Fatalf("viewer got packet %d (%d bytes), want %d (%d bytes)", got, n, dts, size)
		}
	}
	if got := snd.fromFile.Load(); got < frames*size/2 {
		t.Errorf("%d bytes sent from the wire file, want most of %d", got, frames*size)
	}
	wf := s.Spool(framedFormat).(*wireFile)
	wf.guard.RLock()
	punched := wf.punched
	wf.guard.RUnlock()
	if punched < frames*size-5<<20 {
		t.Errorf("released %d bytes of the wire file, want all but the last 5 MiB of %d", punched, frames*size)
	}
	select {
	case err := <-done:
		t.Fatalf("viewer ended: %v", err)
	default:
	}
}

// A viewer too slow for its socket gets whole packets whatever happens
// behind it: partial writes finished from memory, pages released from the
// file, skips ahead, and the stream closing (its file with it).
func TestSenderWireFileSlowViewer(t *testing.T) {
	const size, frames = 24 << 10, 400
	s, p := newPublished(t, stream.Config{MaxBytes: 512 << 10, MaxLag: 200 * time.Millisecond, MaxSkips: 1 << 20})
	write(t, p, vcfg(0))
	srv, cli := loopbackPairs(t, 2)
	srv[0].(*net.TCPConn).SetWriteBuffer(32 << 10)
	cli[0].(*net.TCPConn).SetReadBuffer(32 << 10)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 2)
	for i := range srv {
		r, _ := s.NewReader("test")
		defer r.Close()
		snd.Send(context.Background(), r, framedFormat, srv[i], stream.PumpConfig{WriteTimeout: 20 * time.Second}, func(err error) {
			srv[i].Close()
			done <- err
		})
	}
	// Viewer 1 reads everything as it comes; viewer 0 takes 5 ms a packet,
	// so its writes go partial and it skips ahead.
	type seen struct {
		n    int
		last int64
		err  error
	}
	results := make([]chan seen, len(cli))
	for i, c := range cli {
		results[i] = make(chan seen, 1)
		go func() {
			v := seen{last: -1}
			for {
				dts, _, err := readFramed(c)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						v.err = err
					}
					break
				}
				if dts < v.last {
					v.err = fmt.Errorf("packet %d after %d", dts, v.last)
					break
				}
				v.last = dts
				v.n++
				if i == 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			results[i] <- v
		}()
	}
	dts := int64(1)
	for i := range frames {
		write(t, p, patterned(dts, i%10 == 0, size))
		dts += 10
		time.Sleep(time.Millisecond)
	}
	s.Close() // readers drain what is logged, from memory now
	for _, err := range done.wait(t, 2, 20*time.Second) {
		if !errors.Is(err, io.EOF) {
			t.Errorf("viewer ended with %v, want io.EOF once the stream closed", err)
		}
	}
	slow, fast := <-results[0], <-results[1]
	if slow.err != nil || fast.err != nil {
		t.Fatalf("slow viewer: %v; fast viewer: %v", slow.err, fast.err)
	}
	if want := dts - 10; slow.last != want || fast.last != want {
		t.Errorf("last packets: slow viewer %d, fast %d; want %d", slow.last, fast.last, want)
	}
	if slow.n < 20 || slow.n > frames*3/4 {
		t.Errorf("slow viewer got %d packets of %d, want it to skip some", slow.n, frames)
	}
	if s.Stats().Skips == 0 {
		t.Error("no viewer skipped ahead")
	}
}

// A wire file sends what it holds, and refuses (so the caller writes from
// memory) a range whose pages were released or once the file is closed.
func TestWireFileReleasedRanges(t *testing.T) {
	wf, err := newWireFile(framedFormat)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xab}, punchUnit/4)
	var offs []int64
	for range 6 {
		off, ok := wf.Append(chunk)
		if !ok {
			t.Fatal("append failed")
		}
		offs = append(offs, off)
	}
	srv, cli := loopbackPairs(t, 1)
	sk, _ := sockOf(srv[0])
	sio := newSockIO()
	// send sends chunk i from the file, as many calls as the socket needs,
	// and returns what the viewer received; false if the file refused.
	send := func(i int) (bool, []byte) {
		t.Helper()
		got := make(chan []byte, 1)
		cli[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		go func() {
			b := make([]byte, len(chunk))
			n, _ := io.ReadFull(cli[0], b)
			got <- b[:n]
		}()
		for sent := int64(0); sent < int64(len(chunk)); {
			n, ok, err := wf.send(sio, sk, offs[i]+sent, int64(len(chunk))-sent)
			switch {
			case !ok && sent == 0:
				cli[0].SetReadDeadline(time.Unix(1, 0)) // end the read
				<-got
				return false, nil
			case !ok:
				t.Fatalf("chunk %d refused after %d bytes", i, sent)
			case errors.Is(err, errFull):
				time.Sleep(time.Millisecond)
			case err != nil:
				t.Fatalf("sendfile: %v", err)
			}
			sent += max(n, 0)
		}
		return true, <-got
	}
	if ok, got := send(0); !ok || !bytes.Equal(got, chunk) {
		t.Fatalf("sending a held range: ok %v, bytes equal %v", ok, bytes.Equal(got, chunk))
	}
	// Four chunks make a punchUnit: the first four are released.
	for i := range 4 {
		wf.Evicted(offs[i] + int64(len(chunk)))
	}
	for i := range 4 {
		if ok, _ := send(i); ok {
			t.Errorf("chunk %d: sent from released pages", i)
		}
	}
	if ok, got := send(4); !ok || !bytes.Equal(got, chunk) {
		t.Errorf("chunk 4, still held: ok %v", ok)
	}
	// A sender in the middle of a send holds the release off.
	wf.guard.RLock()
	wf.Evicted(offs[5] + int64(len(chunk)) + punchUnit)
	wf.guard.RUnlock()
	if ok, _ := send(5); !ok {
		t.Error("chunk 5 was released while a sender held the file")
	}
	// Once maxUnpunched bytes are due, the release waits for the sender.
	wf.guard.RLock()
	released := make(chan struct{})
	go func() {
		wf.Evicted(offs[5] + int64(len(chunk)) + maxUnpunched)
		close(released)
	}()
	select {
	case <-released:
		t.Fatal("released pages a sender was using")
	case <-time.After(50 * time.Millisecond):
	}
	wf.guard.RUnlock()
	<-released
	if ok, _ := send(5); ok {
		t.Error("chunk 5 was sent after its release")
	}
	wf.Close()
	if ok, _ := send(5); ok {
		t.Error("sent from a closed file")
	}
}

// Viewers whose first picture left with the answer to their play get the
// rest of the GOP from the sender catchUpDelay later, so that in a burst of
// joins the server answers the plays behind them first; then the stream
// live. Every byte arrives, in order.
func TestSenderCatchUpWaits(t *testing.T) {
	s, p := newPublished(t, stream.Config{})
	write(t, p, vcfg(0), acfg(0))
	gop(t, p, 0, 10)
	srv, cli := loopbackPairs(t, 2)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 2)
	whole := (1 + len(avcC)) + (1 + len(asc)) + 10*(1+1000) + 10*(1+300)
	sentAt := make([]time.Time, 2)
	firstLen := make([]int, 2)
	for i := range 2 {
		r, err := s.NewReader("test")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		first, err := r.Ready(testFormat)
		if err != nil || len(first) == 0 {
			t.Fatalf("viewer %d: no first picture: %v", i, err)
		}
		nb := net.Buffers(first)
		n, err := nb.WriteTo(srv[i]) // what the play answer carries
		if err != nil {
			t.Fatal(err)
		}
		firstLen[i] = int(n)
		sentAt[i] = time.Now()
		snd.Send(context.Background(), r, testFormat, srv[i], stream.PumpConfig{}, func(err error) { done <- err })
	}
	for i, c := range cli {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, firstLen[i])); err != nil {
			t.Fatalf("viewer %d: first picture: %v", i, err)
		}
		rest := make([]byte, whole-firstLen[i])
		if _, err := io.ReadFull(c, rest[:1]); err != nil {
			t.Fatalf("viewer %d: catch-up: %v", i, err)
		}
		// Held for catchUpDelay, less the wheel's rounding to its tick.
		if waited := time.Since(sentAt[i]); waited < catchUpDelay-tickLen {
			t.Errorf("viewer %d got its catch-up %v after joining, want at least %v", i, waited, catchUpDelay-tickLen)
		}
		if _, err := io.ReadFull(c, rest[1:]); err != nil {
			t.Fatalf("viewer %d: catch-up: %v", i, err)
		}
	}
	gop(t, p, 330, 2) // and then the stream, live
	for i, c := range cli {
		if _, err := io.ReadFull(c, make([]byte, 2*(1+1000)+2*(1+300))); err != nil {
			t.Fatalf("viewer %d after catching up: %v", i, err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a viewer ended: %v", err)
	default:
	}
}

// PumpConfig.Nagle turns TCP_NODELAY off on the viewer's socket; without it
// the socket keeps Go's default, on.
func TestSenderNagle(t *testing.T) {
	s, p := newPublished(t, stream.Config{})
	write(t, p, vcfg(0), acfg(0))
	gop(t, p, 0, 1)
	srv, _ := loopbackPairs(t, 2)
	snd := NewSender(1)
	defer snd.Close()
	for i, nagle := range []bool{false, true} {
		r, _ := s.NewReader("test")
		defer r.Close()
		snd.Send(context.Background(), r, testFormat, srv[i], stream.PumpConfig{Nagle: nagle}, func(error) {})
		raw, err := srv[i].(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var nodelay int
		var serr error
		raw.Control(func(fd uintptr) {
			nodelay, serr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
		})
		if serr != nil {
			t.Fatal(serr)
		}
		if want := !nagle; (nodelay != 0) != want {
			t.Errorf("Nagle %v: TCP_NODELAY %d, want %v", nagle, nodelay, want)
		}
	}
}
