//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package stream

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
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
	s, p := newPublished(t, Config{})
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
		snd.Send(context.Background(), r, testFormat, srv[i], PumpConfig{MergeWindow: 20 * time.Millisecond}, func(err error) { done <- err })
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
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	dts := gop(t, p, 0, 2)
	srv, cli := loopbackPairs(t, 2)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 2)
	for i := range srv {
		r, _ := s.NewReader("test")
		defer r.Close()
		snd.Send(context.Background(), r, testFormat, srv[i], PumpConfig{MergeWindow: 20 * time.Millisecond}, func(err error) { done <- err })
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
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	dts := gop(t, p, 0, 2)
	srv, cli := loopbackPairs(t, 2)
	snd := NewSender(1)
	defer snd.Close()
	done := make(ended, 2)
	for i := range srv {
		r, _ := s.NewReader("test")
		defer r.Close()
		snd.Send(context.Background(), r, testFormat, hiddenConn{srv[i]}, PumpConfig{MergeWindow: 20 * time.Millisecond}, func(err error) { done <- err })
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
