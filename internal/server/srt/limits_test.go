package srt

import (
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/srtconn"
	"github.com/meshcast/meshcast/internal/stream"
)

// SRT viewers and publishers count against the hub's per-address sessions
// limit; past it a connection is rejected at the handshake.
func TestMaxSessionsPerIP(t *testing.T) {
	h := hub.New(hub.Config{MaxSessionsPerIP: 1})
	defer h.Close()
	pub, err := h.Publish("live/cam", stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	s := New(Config{Addr: "127.0.0.1:0", HandshakeTimeout: 5 * time.Second}, h)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dial := func() (gosrt.Conn, error) {
		c := gosrt.DefaultConfig()
		c.StreamId = "read:live/cam"
		c.ConnectionTimeout = 3 * time.Second
		return gosrt.Dial("srt", s.Addr().String(), c)
	}
	first, err := dial()
	if err != nil {
		t.Fatalf("first viewer: %v", err)
	}
	defer srtconn.Close(first)
	if second, err := dial(); err == nil {
		srtconn.Close(second)
		t.Fatal("a second viewer from one address was accepted")
	}
	if got := h.SessionRefusals()["srt"]; got != 1 {
		t.Fatalf("%d SRT refusals counted, want 1", got)
	}
}
