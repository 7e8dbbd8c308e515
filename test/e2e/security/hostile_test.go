//go:build unix

package security

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
)

// expectClosed waits for the server to close conn.
func expectClosed(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: connection still open after 10 s", what)
	}
}

// chunk builds a type 0 chunk on chunk stream 2 with the given header fields
// and body (the body may be shorter than the announced length).
func chunk(typeID uint8, length uint32, body []byte) []byte {
	b := []byte{0x02, 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), typeID, 0, 0, 0, 0}
	return append(b, body...)
}

// command builds a command message on chunk stream 3 from raw AMF0.
func command(amf ...[]byte) []byte {
	return rtmp.AppendMessage(nil, rtmp.CSIDCommand, rtmp.TypeCommandAMF0, 0, 0, bytes.Join(amf, nil), rtmp.DefaultChunkSize)
}

// AMF0 pieces of hostile connect commands.
var (
	amfConnect = []byte{0x02, 0, 7, 'c', 'o', 'n', 'n', 'e', 'c', 't', 0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0} // "connect", 1
	amfEnd     = []byte{0, 0, 0x09}
)

// amfNested is an object holding an object ... depth deep.
func amfNested(depth int) []byte {
	var b []byte
	for i := 0; i < depth; i++ {
		b = append(b, 0x03, 0, 1, 'a')
	}
	b = append(b, 0x05) // null
	for i := 0; i < depth; i++ {
		b = append(b, amfEnd...)
	}
	return b
}

// amfApp is an object {app: raw}.
func amfApp(raw ...byte) []byte {
	return append(append([]byte{0x03, 0, 3, 'a', 'p', 'p'}, raw...), amfEnd...)
}

// TestHostileClients runs the meshcast binary in its own process, so its
// memory is measured as users run it, and attacks it while a viewer watches.
func TestHostileClients(t *testing.T) {
	// Attackers that stop sending are closed within 3 s. (By the handshake
	// timeout: the healthy publisher keeps the default read timeout, so a
	// loaded machine's pauses do not end its session.)
	e := startHostile(t, "--handshake-timeout", "3s")
	p, v := e.p, e.v

	dial := func(t *testing.T, handshake bool) net.Conn {
		conn, err := net.DialTimeout("tcp", p.RTMPAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if handshake {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if err := rtmp.ClientHandshake(conn); err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Time{})
		}
		return conn
	}
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

	cases := []struct {
		name      string
		handshake bool
		send      []byte
	}{
		{"garbage bytes", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("\xff", 4000))},
		{"broken handshake", false, append([]byte{3}, bytes.Repeat([]byte{1}, 700)...)},
		{"encrypted handshake version", false, append([]byte{6}, make([]byte, 1536)...)},
		{"set chunk size 0", true, chunk(rtmp.TypeSetChunkSize, 4, be32(0))},
		{"set chunk size above 16 MiB", true, chunk(rtmp.TypeSetChunkSize, 4, be32(16<<20+1))},
		{"set chunk size 2^31-1", true, chunk(rtmp.TypeSetChunkSize, 4, be32(0x7fffffff))},
		{"set chunk size 2^32-1", true, chunk(rtmp.TypeSetChunkSize, 4, be32(0xffffffff))},
		{"set chunk size without body", true, chunk(rtmp.TypeSetChunkSize, 0, nil)},
		{"set chunk size with a short body", true, chunk(rtmp.TypeSetChunkSize, 2, []byte{0, 1})},
		{"16 MiB message header without body", true, chunk(rtmp.TypeCommandAMF0, 0xffffff, nil)},
		{"16 MiB message headers on many chunk streams", true, manyHeaders(3, 63, 0xffffff)},
		{"type 1 chunk on a fresh chunk stream", true, []byte{0x49, 0, 0, 0, 0, 0, 4, rtmp.TypeVideo, 1, 2, 3, 4}},
		{"type 2 chunk on a fresh chunk stream", true, []byte{0x89, 0, 0, 0, 1, 2, 3, 4}},
		{"type 3 chunk on a fresh chunk stream", true, []byte{0xc9, 1, 2, 3}},
		{"AMF connect nested 10,000 deep", true, command(amfConnect, amfNested(10000))},
		{"AMF array count 2^32-1", true, command(amfConnect, amfApp(0x0a, 0xff, 0xff, 0xff, 0xff))},
		{"AMF string length 0xFFFFFFFF", true, command(amfConnect, amfApp(0x0c, 0xff, 0xff, 0xff, 0xff, 'x'))},
	}
	before := p.RSS(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frames := v.Video.Load()
			conn := dial(t, tc.handshake)
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			conn.Write(tc.send)
			expectClosed(t, conn, tc.name)
			// The live viewer keeps receiving.
			v.WaitFrames(t, 15, 10*time.Second)
			if v.Video.Load() <= frames {
				t.Error("live viewer stalled")
			}
		})
	}
	// Many connections each announcing 16 MiB messages on every chunk
	// stream at once: each is closed at its first header.
	t.Run("50 connections announcing 16 MiB on 61 chunk streams", func(t *testing.T) {
		conns := make([]net.Conn, 50)
		for i := range conns {
			conns[i] = dial(t, true)
			conns[i].SetWriteDeadline(time.Now().Add(5 * time.Second))
			conns[i].Write(manyHeaders(3, 63, 0xffffff))
		}
		for i, c := range conns {
			expectClosed(t, c, fmt.Sprintf("connection %d", i))
		}
		if grew := p.RSS(t) - before; grew > 16<<20 {
			t.Errorf("RSS grew by %d MiB, want < 16 MiB", grew>>20)
		}
		e.healthy(t)
	})
	// Many connections announcing the largest message the limit allows, with
	// no body: nothing is allocated before bytes arrive.
	t.Run("100 connections announcing 8 MiB messages", func(t *testing.T) {
		conns := make([]net.Conn, 100)
		for i := range conns {
			conns[i] = dial(t, true)
			conns[i].Write(chunk(rtmp.TypeVideo, rtmp.DefaultMaxMessageSize, []byte{0x17, 1}))
		}
		v.WaitFrames(t, 30, 10*time.Second)
		if grew := p.RSS(t) - before; grew > 16<<20 {
			t.Errorf("RSS grew by %d MiB with 100 half-sent 8 MiB messages, want < 16 MiB", grew>>20)
		}
		for _, c := range conns {
			c.Close()
		}
	})
	t.Logf("server RSS %d MiB before the hostile cases, %d MiB after", before>>20, p.RSS(t)>>20)
	if grew := p.RSS(t) - before; grew > 16<<20 {
		t.Errorf("RSS grew by %d MiB during hostile cases, want < 16 MiB", grew>>20)
	}
	if v.Err.Load() != nil {
		t.Errorf("live viewer failed: %v", v.Err.Load())
	}
	// Each refusal is logged with its reason.
	logs := p.Stderr.String()
	for _, want := range []string{"handshake failed", "chunk size out of range", "message too large",
		"chunk continues a chunk stream with no header", "amf0", "nesting too deep", "too many elements", "string too long"} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log has no %q", want)
		}
	}
	e.healthy(t)
	e.backToBaseline(t)
}

// manyHeaders is type 0 chunk headers announcing a video message of length
// bytes on chunk streams first to last, with no body.
func manyHeaders(first, last int, length uint32) []byte {
	var b []byte
	for cs := first; cs <= last; cs++ {
		b = append(b, byte(cs), 0, 0, 0, byte(length>>16), byte(length>>8), byte(length), rtmp.TypeVideo, 1, 0, 0, 0)
	}
	return b
}
