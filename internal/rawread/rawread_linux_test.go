//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package rawread

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// A raw-read connection reads what was sent, in bounded steps while
// limited, and dates each read by when the kernel received its data.
const firstReads = 8 << 10

func TestStampsArrival(t *testing.T) {
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
