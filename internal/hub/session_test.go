package hub

import (
	"errors"
	"testing"

	"github.com/meshcast/meshcast/internal/streamname"
)

func TestAdmitPerIP(t *testing.T) {
	h := New(Config{MaxSessionsPerIP: 2})
	defer h.Close()
	name := streamname.Name("live/x")
	// Two sessions from one address, however written.
	p1, err := h.Admit("rtmp", "192.0.2.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := h.Admit("flv", "[::ffff:192.0.2.1]:6000")
	if err != nil {
		t.Fatal(err)
	}
	// The third is refused, over any protocol; another address is not.
	for _, proto := range []string{"rtmp", "srt", "srt"} {
		if _, err := h.Admit(proto, "192.0.2.1"); !errors.Is(err, ErrTooManySessions) {
			t.Fatalf("%s: third session from one address: %v", proto, err)
		}
	}
	if _, err := h.Admit("rtmp", "192.0.2.2:1"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if got := h.SessionRefusals(); got["rtmp"] != 1 || got["srt"] != 2 || len(got) != 2 {
		t.Fatalf("refusals %v", got)
	}
	// A session's end gives its place back; releasing again does nothing.
	_, end := h.StartSession(Session{Kind: KindPlay, Protocol: "rtmp", Stream: name, RemoteAddr: "192.0.2.1:5000", Place: p1}, func() {})
	end()
	p1.Release()
	p3, err := h.Admit("webrtc", "192.0.2.1:7000")
	if err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
	if _, err := h.Admit("webrtc", "192.0.2.1:7001"); err == nil {
		t.Fatal("a released place was given back twice")
	}
	p2.Release()
	p3.Release()
	if n := h.sessions.perIP.Open(remoteIP("192.0.2.1:1")); n != 0 {
		t.Fatalf("%d places still held", n)
	}
	// An address that cannot be read: a nil place, counted nowhere.
	if p, err := h.Admit("rtmp", "pipe"); p != nil || err != nil {
		t.Fatalf("unreadable address: %v, %v", p, err)
	}
	var none *Place
	none.Release()

	// Without a limit every session is admitted, and counted: a limit set
	// later (a reload) holds the sessions already there.
	free := New(Config{})
	defer free.Close()
	var places []*Place
	for range 10 {
		p, err := free.Admit("rtmp", "192.0.2.1:1")
		if err != nil {
			t.Fatalf("no limit: %v", err)
		}
		places = append(places, p)
	}
	free.SetMaxSessionsPerIP(10)
	if _, err := free.Admit("rtmp", "192.0.2.1:1"); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("an 11th session after the limit became 10: %v, want ErrTooManySessions", err)
	}
	places[0].Release()
	p, err := free.Admit("rtmp", "192.0.2.1:1")
	if err != nil {
		t.Fatalf("a session after one left: %v", err)
	}
	p.Release()
	free.SetMaxSessionsPerIP(0)
	for _, p := range places[1:] {
		p.Release()
	}
}
