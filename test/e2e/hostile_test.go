package e2e

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

// TestHostileClients runs the meshcast binary in its own process, so its
// memory is measured as users run it, and attacks it while a viewer watches.
func TestHostileClients(t *testing.T) {
	p := startProcess(t, "--read-timeout", "3s")
	publishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/live/stream", p.rtmpPort))
	waitLiveHTTP(t, p.httpURL, "live/stream")
	v := playRTMP(t, p.rtmpAddr, "live/stream")
	v.waitFrames(t, 30, 15*time.Second)

	dial := func(t *testing.T, handshake bool) net.Conn {
		conn, err := net.DialTimeout("tcp", p.rtmpAddr, 5*time.Second)
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
		{"set chunk size without body", true, chunk(rtmp.TypeSetChunkSize, 0, nil)},
		{"16 MiB message header without body", true, chunk(rtmp.TypeCommandAMF0, 0xffffff, nil)},
		{"type 3 chunk on a fresh chunk stream", true, []byte{0xc9, 1, 2, 3}},
	}
	before := p.rss(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frames := v.video.Load()
			conn := dial(t, tc.handshake)
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			conn.Write(tc.send)
			expectClosed(t, conn, tc.name)
			// The live viewer keeps receiving.
			v.waitFrames(t, 15, 10*time.Second)
			if v.video.Load() <= frames {
				t.Error("live viewer stalled")
			}
		})
	}
	// Many connections announcing the largest message the limit allows, with
	// no body: nothing is allocated before bytes arrive.
	t.Run("100 connections announcing 8 MiB messages", func(t *testing.T) {
		conns := make([]net.Conn, 100)
		for i := range conns {
			conns[i] = dial(t, true)
			conns[i].Write(chunk(rtmp.TypeVideo, rtmp.DefaultMaxMessageSize, []byte{0x17, 1}))
		}
		v.waitFrames(t, 30, 10*time.Second)
		if grew := p.rss(t) - before; grew > 16<<20 {
			t.Errorf("RSS grew by %d MiB with 100 half-sent 8 MiB messages, want < 16 MiB", grew>>20)
		}
		for _, c := range conns {
			c.Close()
		}
	})
	t.Logf("server RSS %d MiB before the hostile cases, %d MiB after", before>>20, p.rss(t)>>20)
	if grew := p.rss(t) - before; grew > 16<<20 {
		t.Errorf("RSS grew by %d MiB during hostile cases, want < 16 MiB", grew>>20)
	}
	if v.err.Load() != nil {
		t.Errorf("live viewer failed: %v", v.err.Load())
	}
	// Each refusal is logged with its reason.
	logs := p.stderr.String()
	for _, want := range []string{"handshake failed", "chunk size out of range", "message too large"} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log has no %q", want)
		}
	}
}
