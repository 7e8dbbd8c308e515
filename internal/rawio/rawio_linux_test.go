//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// A raw-read connection reads what was sent, in bounded steps while
// limited, and dates each read by when the kernel received its data.
const firstReads = 8 << 10

func TestStampsArrival(t *testing.T) {
	c, s := pair(t)
	conn := New(c, true)
	if _, ok := conn.(*Conn); !ok {
		t.Fatalf("New gave a %T", conn)
	}
	SetLimit(conn, firstReads)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))

	// The kernel turns receive stamps on a moment after the first socket
	// asks for them: until then reads are dated by the read itself.
	one := make([]byte, 1)
	for deadline := time.Now().Add(5 * time.Second); conn.(*Conn).rx.IsZero(); {
		if time.Now().After(deadline) {
			t.Fatal("no receive stamps within 5 s")
		}
		if _, err := s.Write(one); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(one); err != nil {
			t.Fatal(err)
		}
		if conn.(*Conn).rx.IsZero() {
			time.Sleep(10 * time.Millisecond)
		}
	}

	sent := bytes.Repeat([]byte("meshcast"), 4<<10) // 32 KiB
	before := time.Now()
	if _, err := s.Write(sent); err != nil {
		t.Fatal(err)
	}
	wrote := time.Now()
	time.Sleep(50 * time.Millisecond) // the reader comes late
	buf := make([]byte, len(sent))
	n, err := conn.Read(buf)
	if err != nil || n != firstReads {
		t.Fatalf("first read: %d bytes, %v; want %d", n, err, firstReads)
	}
	at := Received(conn)
	if at.Before(before.Add(-time.Millisecond)) || at.After(wrote.Add(10*time.Millisecond)) {
		t.Errorf("stamped %v after the write began, want the arrival, not the read %v later",
			at.Sub(before), time.Since(before))
	}
	SetLimit(conn, 0)
	if _, err := io.ReadFull(conn, buf[n:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, sent) {
		t.Error("bytes read differ from those sent")
	}
	s.Close()
	if _, err := conn.Read(buf); err != io.EOF {
		t.Errorf("after the peer closed: %v, want io.EOF", err)
	}
}

// Writes go out whole and in order, across many buffers and through a
// socket that fills up while the peer is slow to read.
func TestWritesWhole(t *testing.T) {
	c, s := pair(t)
	// Small buffers: the writes must wait for the reader.
	c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	s.(*net.TCPConn).SetReadBuffer(16 << 10)
	conn := New(c, false)
	bw, ok := conn.(interface {
		WriteBuffers([][]byte) (int64, error)
	})
	if !ok {
		t.Fatalf("New gave a %T, without WriteBuffers", conn)
	}
	var want []byte
	var bufs [][]byte
	for i := range 3000 { // more buffers than one system call takes
		b := bytes.Repeat([]byte{byte(i)}, 1+i%2000)
		bufs = append(bufs, b, nil)
		want = append(want, b...)
	}
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // the socket fills meanwhile
		b, _ := io.ReadAll(s)
		got <- b
	}()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	n, err := bw.WriteBuffers(bufs)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("WriteBuffers: %d bytes, %v; want %d", n, err, len(want))
	}
	tail := []byte("the end")
	if n, err := conn.Write(tail); err != nil || n != len(tail) {
		t.Fatalf("Write: %d, %v", n, err)
	}
	want = append(want, tail...)
	c.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Errorf("peer read %d bytes, not the %d written in order", len(b), len(want))
	}
}

// A write to a peer that stops reading ends at the write deadline.
func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t)
	conn := New(c, false)
	conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	big := make([]byte, 64<<20)
	n, err := conn.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a peer that does not read: %d bytes, %v; want the deadline", n, err)
	}
	if n <= 0 || n >= len(big) {
		t.Errorf("wrote %d bytes before the deadline, want some but not all", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the deadline took %v", d)
	}
}
