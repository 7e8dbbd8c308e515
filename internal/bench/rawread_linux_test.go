//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package bench

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// A fast-read connection reads what was sent, in bounded steps until the
// first picture, and dates each read by when the kernel received its data.
func TestFastReadsStampArrival(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn := fastReads(c)
	if _, ok := conn.(*rawReadConn); !ok {
		t.Fatalf("fastReads gave a %T", conn)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))

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
	at := received(conn)
	if at.Before(before.Add(-time.Millisecond)) || at.After(wrote.Add(10*time.Millisecond)) {
		t.Errorf("stamped %v after the write began, want the arrival, not the read %v later",
			at.Sub(before), time.Since(before))
	}
	readAll(conn)
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
