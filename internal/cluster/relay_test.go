package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

func mediaData(body []byte) media.Packet {
	return media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, Payload: body}
}

// The node a relay pulls from, in each topology: the owner (star), the
// first live parent (tree), or a same-region peer pulling straight from
// the owner (mesh).
func TestRelayChoosesUpstream(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/stream")
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	for _, n := range []Node{
		{ID: "owner", Region: "us"},
		{ID: "peer-us", Region: "us"},
		{ID: "peer-eu", Region: "eu"},
		{ID: "second-tier", Region: "eu"},
		{ID: "self", Region: "eu"},
	} {
		n.State, n.HTTPAddr = StateServing, string(n.ID)+":8080"
		if err := reg.Heartbeat(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Claim(ctx, name, "owner", ""); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Relay{{"peer-us", "owner"}, {"peer-eu", "owner"}, {"second-tier", "peer-eu"}, {"self", "owner"}} {
		if err := reg.SetRelay(ctx, name, r); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		cfg  RelayConfig
		want NodeID
	}{
		{"star", RelayConfig{}, "owner"},
		{"tree", RelayConfig{Parents: []NodeID{"gone", "self", "second-tier"}}, "second-tier"},
		{"tree without a live parent", RelayConfig{Parents: []NodeID{"gone"}}, "owner"},
		{"mesh, same region first", RelayConfig{Mesh: true, Region: "eu"}, "peer-eu"},
		{"mesh, no peer in the region", RelayConfig{Mesh: true, Region: "ap"}, "peer-eu"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Self, tc.cfg.Registry = "self", reg
			n, err := NewRelays(tc.cfg, nil).choose(ctx, &relay{name: name}, false)
			if err != nil || n.ID != tc.want || n.HTTPAddr != string(tc.want)+":8080" {
				t.Errorf("choose = %+v, %v; want %s", n, err, tc.want)
			}
		})
	}

	m := NewRelays(RelayConfig{Self: "self", Registry: reg}, nil)
	if _, err := m.choose(ctx, &relay{name: "live/nothing"}, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("a stream nobody owns: %v, want ErrNotFound", err)
	}
	mine := streamname.Name("live/mine")
	if _, err := reg.Claim(ctx, mine, "self", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := m.choose(ctx, &relay{name: mine}, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("a stream this node owns: %v, want ErrNotFound", err)
	}
	if err := reg.Leave(ctx, "owner"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.choose(ctx, &relay{name: name}, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("an owner that left: %v, want ErrNotFound", err)
	}
}

func TestEndTag(t *testing.T) {
	// The end marker is an FLV script tag a puller recognises, and no
	// onMetaData is mistaken for it.
	tag := EndTag()
	if len(tag) < 15 || tag[0] != 18 {
		t.Fatalf("EndTag = % x, want an FLV script data tag", tag)
	}
	body := tag[11 : len(tag)-4]
	if p := mediaData(body); !isEnd(&p) {
		t.Error("EndTag's body is not recognised as the end")
	}
	if p := mediaData([]byte{2, 0, 10, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a', 't', 'a'}); isEnd(&p) {
		t.Error("onMetaData taken for the end")
	}
}

// recordingHub opens relayed streams and keeps them.
type recordingHub struct {
	mu      sync.Mutex
	streams map[streamname.Name]*stream.Stream
}

func (h *recordingHub) OpenRelay(name streamname.Name, from string) (*stream.Publisher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := stream.New(name, stream.Config{})
	h.streams[name] = s
	return s.Attach(stream.PublisherInfo{Protocol: "relay", RemoteAddr: from})
}

func (h *recordingHub) get(name streamname.Name) *stream.Stream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[name]
}

// serveKeyframe answers a pull as an owner does: the FLV header and a
// keyframe, then nothing until the puller leaves.
func serveKeyframe(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"))
	w.Write(flv.AppendTag(nil, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, DTS: 40,
		Payload: []byte{0, 0, 0, 2, 0x65, 0x88}}))
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// A parent that answers that the pull came round to it again (508) is
// given up: the relay pulls from the owner, carrying the chain it was
// asked with, and the stream flows.
func TestRelayFallsBackToOwnerOnLoop(t *testing.T) {
	const secret = "a-cluster-secret-for-tests"
	const name = streamname.Name("live/loop")
	var parentVia, ownerVia atomic.Value
	parent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parentVia.Store(r.Header.Get(HeaderVia))
		if _, err := VerifyPull(r, secret, time.Now()); err != nil {
			t.Errorf("parent: %v", err)
		}
		http.Error(w, "loop", http.StatusLoopDetected)
	}))
	defer parent.Close()
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ownerVia.Store(r.Header.Get(HeaderVia))
		if _, err := VerifyPull(r, secret, time.Now()); err != nil {
			t.Errorf("owner: %v", err)
		}
		serveKeyframe(w, r)
	}))
	defer owner.Close()

	m, h := relaysThroughParent(t, secret, name, owner, parent)
	defer m.Close()
	if err := m.Pull(name, []NodeID{"viewer-node"}); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the relayed stream to get the owner's keyframe", func() bool {
		s := h.get(name)
		if s == nil {
			return false
		}
		_, ok := s.LastDTS()
		return ok
	})
	if got := m.Active()[name]; got != "owner" {
		t.Errorf("relay pulls from %q, want the owner", got)
	}
	if v, _ := parentVia.Load().(string); v != "viewer-node" {
		t.Errorf("pull to the parent carried via %q, want viewer-node", v)
	}
	if v, _ := ownerVia.Load().(string); v != "viewer-node" {
		t.Errorf("pull to the owner carried via %q, want viewer-node", v)
	}
}

// A relay whose upstream is gone waits for its backoff, unless the name is
// claimed again: then it pulls from the new owner at once. Here the
// relays' clock never moves, so only the claim can wake it.
func TestRelayWokenByClaim(t *testing.T) {
	const secret = "a-cluster-secret-for-tests"
	const name = streamname.Name("live/woken")
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{Clock: clk})
	owner := httptest.NewServer(http.HandlerFunc(serveKeyframe))
	defer owner.Close()
	for id, addr := range map[NodeID]string{"dead": "127.0.0.1:1", "new": owner.Listener.Addr().String()} {
		if err := reg.Heartbeat(ctx, Node{ID: id, State: StateServing, HTTPAddr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	key := CredentialOf(secret, "publish-key")
	if _, err := reg.Claim(ctx, name, "dead", key); err != nil {
		t.Fatal(err)
	}
	h := &recordingHub{streams: map[streamname.Name]*stream.Stream{}}
	m := NewRelays(RelayConfig{Self: "edge", Registry: reg, Secret: secret, Clock: clk,
		Logger: slog.New(slog.DiscardHandler)}, h)
	defer m.Close()
	if err := m.Pull(name, nil); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	// The pull from the dead owner fails; the relay waits on its clock.
	testutil.WaitFor(t, 5*time.Second, "the relay to wait out its backoff", func() bool { return clk.Waiters() >= 2 })
	if _, err := reg.Claim(ctx, name, "new", key); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "the relayed stream to get the new owner's keyframe", func() bool {
		_, ok := h.get(name).LastDTS()
		return ok
	})
	if got := m.Active()[name]; got != "new" {
		t.Errorf("relay pulls from %q, want the new owner", got)
	}
}

// serveKeepAlive answers a pull as an owner whose publisher is away does:
// the FLV header and a keyframe, then a keep-alive every KeepAliveEvery
// until the puller leaves.
func serveKeepAlive(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"))
	w.Write(flv.AppendTag(nil, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, DTS: 40,
		Payload: []byte{0, 0, 0, 2, 0x65, 0x88}}))
	w.(http.Flusher).Flush()
	t := time.NewTicker(KeepAliveEvery)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
			if _, err := w.Write(KeepAliveTag()); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

// A parent whose link goes silent (open, but not a byte, as behind a
// partition) is given up after SilenceTimeout, well within 3 s, and the
// relay pulls from the owner instead, though the parent is still listed
// alive; an upstream sending keep-alives is not.
func TestRelayLeavesSilentUpstream(t *testing.T) {
	const secret = "a-cluster-secret-for-tests"
	const name = streamname.Name("live/silent")
	var parentPulls, ownerPulls atomic.Int32
	var parentSent, ownerAsked atomic.Int64 // unix nanoseconds
	parent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parentPulls.Add(1)
		w.Write([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"))
		w.Write(flv.AppendTag(nil, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, DTS: 40,
			Payload: []byte{0, 0, 0, 2, 0x65, 0x88}}))
		w.(http.Flusher).Flush()
		parentSent.Store(time.Now().UnixNano())
		<-r.Context().Done() // then silence: the link is cut
	}))
	defer parent.Close()
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ownerPulls.Add(1) == 1 {
			ownerAsked.Store(time.Now().UnixNano())
		}
		serveKeepAlive(w, r)
	}))
	defer owner.Close()

	m, _ := relaysThroughParent(t, secret, name, owner, parent)
	defer m.Close()
	if err := m.Pull(name, nil); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	// The relay names its new upstream as it dials it: the owner's
	// handler may not have run yet.
	testutil.WaitFor(t, 10*time.Second, "the relay to pull from the owner", func() bool {
		return m.Active()[name] == "owner" && ownerAsked.Load() != 0
	})
	took := time.Duration(ownerAsked.Load() - parentSent.Load())
	t.Logf("parent's last byte to the owner's pull: %v", took)
	if took < SilenceTimeout {
		t.Errorf("the parent was left %v after its last byte, before SilenceTimeout (%v)", took, SilenceTimeout)
	}
	if took > 3*time.Second {
		t.Errorf("the parent was left %v after its last byte, want within 3 s", took)
	}
	// The owner sends nothing but keep-alives: it is kept, on one pull.
	time.Sleep(2*SilenceTimeout + time.Second)
	if got := m.Active()[name]; got != "owner" {
		t.Errorf("relay pulls from %q after keep-alives only, want the owner still", got)
	}
	if n := ownerPulls.Load(); n != 1 {
		t.Errorf("%d pulls of the owner, want 1: keep-alives keep the link", n)
	}
	if n := parentPulls.Load(); n != 1 {
		t.Errorf("%d pulls of the silent parent, want 1", n)
	}
}

func TestKeepAliveTag(t *testing.T) {
	tag := KeepAliveTag()
	body := tag[11 : len(tag)-4]
	if p := mediaData(body); !isKeepAlive(&p) || isEnd(&p) {
		t.Error("KeepAliveTag's body is not recognised as a keep-alive only")
	}
	end := EndTag()
	if p := mediaData(end[11 : len(end)-4]); isKeepAlive(&p) {
		t.Error("EndTag taken for a keep-alive")
	}
}

// relaysThroughParent is node "edge"'s relays with "parent" as its
// --parent, signing with secret, over a registry in which the stream name
// is owned by "owner": the two servers.
func relaysThroughParent(t *testing.T, secret string, name streamname.Name, owner, parent *httptest.Server) (*Relays, *recordingHub) {
	t.Helper()
	ctx := context.Background()
	reg := NewMemory(MemoryConfig{})
	for id, srv := range map[NodeID]*httptest.Server{"owner": owner, "parent": parent} {
		if err := reg.Heartbeat(ctx, Node{ID: id, State: StateServing, HTTPAddr: srv.Listener.Addr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Claim(ctx, name, "owner", ""); err != nil {
		t.Fatal(err)
	}
	h := &recordingHub{streams: map[streamname.Name]*stream.Stream{}}
	return NewRelays(RelayConfig{Self: "edge", Registry: reg, Secret: secret, Parents: []NodeID{"parent"},
		Logger: slog.New(slog.DiscardHandler)}, h), h
}
