package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// A member keeps its claims past their lease, learns when another node has
// taken one (after the store lost it), and leaves the registry on Close.
func TestMemberRenewsLosesAndLeaves(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/member")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{NodeTimeout: 1500 * time.Millisecond, Clock: clk})
	defer reg.Close()
	lost := make(chan streamname.Name, 1)
	beats := make(chan struct{}, 10) // one after each beat is written
	m := NewMember(MemberConfig{
		Self:     Node{ID: "node-a", HTTPAddr: "127.0.0.1:1"},
		Registry: signalled{reg, beats},
		Load:     func() Load { return Load{Viewers: 7} },
		OnLost:   func(n streamname.Name) { lost <- n },
		Clock:    clk,
	})
	m.Start()
	<-beats
	testutil.WaitFor(t, 5*time.Second, "the member's ticker", func() bool { return clk.Waiters() == 1 })
	beat := func() {
		t.Helper()
		clk.Advance(heartbeatEvery)
		select {
		case <-beats:
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat after a second of the member's clock")
		}
	}
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	if n, err := reg.Node(ctx, "node-a"); err != nil || n.Load.Viewers != 7 || n.State != StateServing {
		t.Fatalf("node after Start: %+v, %v", n, err)
	}
	release, _, err := m.Claim(name, "")
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	// Past two leases, the claim is still held: the member renews it.
	for range 4 {
		beat()
	}
	if c, err := reg.Owner(ctx, name); err != nil || c.Node != "node-a" {
		t.Fatalf("owner after two leases: %+v, %v", c, err)
	}

	// The store forgets everything and another node claims the name at
	// the same epoch before node-a renews: node-a has lost it.
	reg.reset()
	if err := reg.Heartbeat(ctx, Node{ID: "node-b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Claim(ctx, name, "node-b", ""); err != nil {
		t.Fatal(err)
	}
	beat()
	select {
	case n := <-lost:
		if n != name {
			t.Fatalf("lost %s, want %s", n, name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the member never learned it lost the stream")
	}
	if len(m.Claims()) != 0 {
		t.Errorf("claims after the loss: %v", m.Claims())
	}
	if c, _ := reg.Owner(ctx, name); c.Node != "node-b" {
		t.Errorf("owner after the loss: %+v, want node-b", c)
	}

	m.Close()
	closed = true
	nodes, _ := reg.Nodes(ctx)
	if slices.ContainsFunc(nodes, func(n Node) bool { return n.ID == "node-a" }) {
		t.Errorf("node-a still listed after Close: %v", nodes)
	}
}

// A member whose claim another node takes over with the publisher's
// credential gives it up as soon as the registry publishes the takeover,
// without waiting for its next renewal.
func TestMemberFencedByTakeover(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/fenced")
	const secret = "a-cluster-secret-for-tests"
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{NodeTimeout: 5 * time.Second, Clock: clk})
	lost := make(chan streamname.Name, 1)
	m := NewMember(MemberConfig{
		Self: Node{ID: "node-a"}, Registry: reg, Secret: secret, Clock: clk,
		OnLost: func(n streamname.Name) { lost <- n },
	})
	m.Start()
	defer m.Close()
	release, _, err := m.Claim(name, "publish-key-digest")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := reg.Heartbeat(ctx, Node{ID: "node-b", State: StateServing}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Claim(ctx, name, "node-b", CredentialOf(secret, "another-digest")); !errors.Is(err, ErrClaimed) {
		t.Fatalf("takeover with another credential: %v, want ErrClaimed", err)
	}
	c, err := reg.Claim(ctx, name, "node-b", CredentialOf(secret, "publish-key-digest"))
	if err != nil || c.From != "node-a" {
		t.Fatalf("takeover with the publisher's credential: %+v, %v", c, err)
	}
	select {
	case n := <-lost:
		if n != name {
			t.Fatalf("lost %s, want %s", n, name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the member was not fenced by the takeover (its clock never moved: no renewal told it)")
	}
	if len(m.Claims()) != 0 {
		t.Fatalf("claims after the takeover: %v", m.Claims())
	}
}

// A member writes its streams' records with each renewal and its viewers
// per stream with each heartbeat.
func TestMemberWritesStreamRecords(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/described")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{Clock: clk})
	beats := make(chan struct{}, 10)
	m := NewMember(MemberConfig{
		Self: Node{ID: "node-a"}, Registry: signalled{reg, beats}, Clock: clk,
		StreamInfo: func(n streamname.Name) json.RawMessage {
			return json.RawMessage(`{"name":"` + string(n) + `"}`)
		},
		StreamViewers: func() map[streamname.Name]map[string]int {
			return map[streamname.Name]map[string]int{name: {"rtmp": 40, "hls": 2}}
		},
	})
	m.Start()
	defer m.Close()
	<-beats
	release, _, err := m.Claim(name, "")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	testutil.WaitFor(t, 5*time.Second, "the member's ticker", func() bool { return clk.Waiters() == 1 })
	clk.Advance(heartbeatEvery)
	<-beats
	infos, err := reg.StreamInfos(ctx)
	if err != nil || infos[name].Node != "node-a" || string(infos[name].Info) != `{"name":"live/described"}` {
		t.Fatalf("stream records %+v, %v", infos, err)
	}
	n, err := reg.Node(ctx, "node-a")
	if err != nil || n.StreamViewers[name]["rtmp"] != 40 || n.StreamViewers[name]["hls"] != 2 {
		t.Fatalf("node record %+v, %v; want 42 viewers of %s", n, err, name)
	}
}

// TestMemberCarriesTimelineToNextOwner: a member writes where its streams'
// timestamps stand with their records, and the next member to claim a
// stream, after the first released it and left, is handed that timeline.
func TestMemberCarriesTimelineToNextOwner(t *testing.T) {
	const name = streamname.Name("live/moving")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{Clock: clk})
	at := clk.Now().Add(-300 * time.Millisecond).UnixMilli()
	beats := make(chan struct{}, 10)
	a := NewMember(MemberConfig{
		Self: Node{ID: "node-a"}, Registry: signalled{reg, beats}, Clock: clk,
		Timeline: func(n streamname.Name) *Timeline {
			if n != name {
				return nil
			}
			return &Timeline{DTS: 7000, At: at}
		},
	})
	a.Start()
	<-beats
	release, prior, err := a.Claim(name, "")
	if err != nil || prior != nil {
		t.Fatalf("first claim: prior %v, %v; want none", prior, err)
	}
	testutil.WaitFor(t, 5*time.Second, "the member's ticker", func() bool { return clk.Waiters() == 1 })
	clk.Advance(heartbeatEvery)
	<-beats
	release()
	a.Close()

	b := NewMember(MemberConfig{Self: Node{ID: "node-b"}, Registry: reg, Clock: clk})
	b.Start()
	defer b.Close()
	release, prior, err = b.Claim(name, "")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if prior == nil || *prior != (Timeline{DTS: 7000, At: at}) {
		t.Fatalf("next owner's prior %v, want node-a's timeline", prior)
	}
	if cs := b.Claims(); len(cs) != 1 || cs[0].Prior != nil {
		t.Fatalf("claims kept %+v, want one without its answer's timeline", cs)
	}
}

// signalled is a registry that signals done once each beat is written.
type signalled struct {
	*Memory
	done chan struct{}
}

func (s signalled) Beat(ctx context.Context, b BeatRecord) ([]Claim, error) {
	lost, err := s.Memory.Beat(ctx, b)
	s.done <- struct{}{}
	return lost, err
}

// beatRecorder is a registry that hands each beat's relays to a test.
type beatRecorder struct {
	*Memory
	relays chan map[streamname.Name]NodeID
}

func (r beatRecorder) Beat(ctx context.Context, b BeatRecord) ([]Claim, error) {
	lost, err := r.Memory.Beat(ctx, b)
	r.relays <- b.Relays
	return lost, err
}

// A member writes a relay's record when the relay starts or changes
// upstream, and again once a node timeout, not on every beat.
func TestMemberWritesRelaysWhenTheyChange(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := beatRecorder{NewMemory(MemoryConfig{NodeTimeout: 3 * time.Second, Clock: clk}), make(chan map[streamname.Name]NodeID, 10)}
	defer reg.Close()
	const x, y = streamname.Name("live/x"), streamname.Name("live/y")
	active := map[streamname.Name]NodeID{x: "node-o"}
	var mu sync.Mutex
	m := NewMember(MemberConfig{
		Self:     Node{ID: "node-a", HTTPAddr: "127.0.0.1:1"},
		Registry: reg,
		Relays: func() map[streamname.Name]NodeID {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(active)
		},
		Clock:       clk,
		Every:       time.Second,
		NodeTimeout: 3 * time.Second,
	})
	m.Start()
	defer m.Close()
	written := func(step string, want string) {
		t.Helper()
		select {
		case got := <-reg.relays:
			if fmt.Sprint(got) != want {
				t.Errorf("%s: beat wrote relays %v, want %s", step, got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no beat", step)
		}
	}
	beat := func(step, want string, change func()) {
		t.Helper()
		if change != nil {
			mu.Lock()
			change()
			mu.Unlock()
		}
		clk.Advance(time.Second)
		written(step, want)
	}
	written("start", "map[live/x:node-o]")
	testutil.WaitFor(t, 5*time.Second, "the member's ticker", func() bool { return clk.Waiters() == 1 })
	beat("1 s, unchanged", "map[]", nil)
	beat("2 s, a new relay", "map[live/y:node-o]", func() { active[y] = "node-o" })
	beat("3 s, a new upstream", "map[live/x:node-b]", func() { active[x] = "node-b" })
	beat("4 s", "map[]", nil)
	beat("5 s, y's record a node timeout old", "map[live/y:node-o]", nil)
	beat("6 s, x's record a node timeout old", "map[live/x:node-b]", nil)
	// A relay that ended and starts again is written at once.
	beat("7 s, y ended", "map[]", func() { delete(active, y) })
	beat("8 s, y again", "map[live/y:node-o]", func() { active[y] = "node-o" })
	if rs, err := reg.Relays(context.Background(), x); err != nil || fmt.Sprint(rs) != "[{node-a node-b}]" {
		t.Errorf("Relays(x) = %v, %v", rs, err)
	}
}

// unreachable is a registry whose Beat and Nodes fail while down is set,
// as a store behind a partition does.
type unreachable struct {
	*Memory
	down *atomic.Bool
}

func (u unreachable) Beat(ctx context.Context, b BeatRecord) ([]Claim, error) {
	if u.down.Load() {
		return nil, fmt.Errorf("%w: partitioned", ErrUnavailable)
	}
	return u.Memory.Beat(ctx, b)
}

func (u unreachable) Nodes(ctx context.Context) ([]Node, error) {
	if u.down.Load() {
		return nil, fmt.Errorf("%w: partitioned", ErrUnavailable)
	}
	return u.Memory.Nodes(ctx)
}

// lockedBuffer collects a logger's lines from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A member that reaches neither the registry nor any known peer for one
// lease stops serving its streams (OnLost) and forgets their claims, once,
// with one Warn line; while a peer answers it keeps serving through the
// registry's outage, and back in touch it claims anew.
func TestMemberCutOffStopsServing(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/partition")
	const lease = 5 * time.Second
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	mem := NewMemory(MemoryConfig{NodeTimeout: lease, Clock: clk})
	defer mem.Close()
	if err := mem.Heartbeat(ctx, Node{ID: "node-b", State: StateServing, HTTPAddr: "node-b:8080"}); err != nil {
		t.Fatal(err)
	}
	var down, answer atomic.Bool
	answer.Store(true)
	var probes atomic.Int32
	reach := func(_ context.Context, n Node) error {
		probes.Add(1)
		if n.ID != "node-b" || n.HTTPAddr != "node-b:8080" {
			t.Errorf("probed %+v, want node-b as listed", n)
		}
		if !answer.Load() {
			return errors.New("no route to node-b")
		}
		return nil
	}
	lost := make(chan streamname.Name, 4)
	var logs lockedBuffer
	m := NewMember(MemberConfig{
		Self:        Node{ID: "node-a", HTTPAddr: "node-a:8080"},
		Registry:    unreachable{mem, &down},
		OnLost:      func(n streamname.Name) { lost <- n },
		Clock:       clk,
		Every:       time.Second,
		NodeTimeout: lease,
		Reach:       reach,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	m.Start()
	defer m.Close()
	testutil.WaitFor(t, 5*time.Second, "the member's ticker", func() bool { return clk.Waiters() == 1 })
	if _, _, err := m.Claim(name, ""); err != nil {
		t.Fatal(err)
	}
	before := m.Claims()[0]
	// step moves the member's clock on by d in half-seconds, letting the
	// contact watch (when it runs) take each one: it waits on the clock
	// beside the beat's ticker.
	step := func(d time.Duration, watching bool) {
		t.Helper()
		for range d / (500 * time.Millisecond) {
			clk.Advance(500 * time.Millisecond)
			if watching {
				testutil.WaitFor(t, 5*time.Second, "the contact watch to wait again", func() bool { return clk.Waiters() == 2 })
			}
		}
	}
	noLoss := func(when string) {
		t.Helper()
		select {
		case n := <-lost:
			t.Fatalf("%s: %s given up", when, n)
		default:
		}
		if len(m.Claims()) != 1 {
			t.Fatalf("%s: claims %v, want the stream's", when, m.Claims())
		}
	}

	// The registry is away, a peer answers: the registry is away for
	// everyone, and the node serves on through three leases.
	down.Store(true)
	clk.Advance(time.Second) // the beat fails; the watch starts
	testutil.WaitFor(t, 5*time.Second, "the contact watch to start", func() bool { return clk.Waiters() == 2 })
	step(3*lease, true)
	noLoss("a peer answering")
	if probes.Load() == 0 {
		t.Fatal("no peer asked while the registry was away")
	}

	// Nothing answers now. The last answer was sent at most half a second
	// ago: nothing is given up for 4 s more, and all by a lease.
	answer.Store(false)
	step(4*time.Second, true)
	noLoss("within the lease")
	clk.Advance(1500 * time.Millisecond)
	select {
	case n := <-lost:
		if n != name {
			t.Fatalf("gave up %s, want %s", n, name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a member cut off for a lease kept its stream")
	}
	if cs := m.Claims(); len(cs) != 0 {
		t.Fatalf("claims after being cut off: %v", cs)
	}
	step(2*lease, false)
	if n := strings.Count(logs.String(), "cut off:"); n != 1 {
		t.Errorf("%d cut-off lines, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"cut off:") {
		t.Errorf("the cut-off is not logged at WARN:\n%s", logs.String())
	}

	// Back in touch: the next beat goes through and the stream is
	// claimed anew at a newer epoch (the old claim expired meanwhile).
	down.Store(false)
	clk.Advance(time.Second)
	testutil.WaitFor(t, 5*time.Second, "the registry to log the node back", func() bool {
		return strings.Contains(logs.String(), "registry reachable again")
	})
	if _, _, err := m.Claim(name, ""); err != nil {
		t.Fatalf("claim back in touch: %v", err)
	}
	if c, err := mem.Owner(ctx, name); err != nil || c.Epoch <= before.Epoch {
		t.Errorf("owner back in touch %+v, %v; want a newer epoch than %d", c, err, before.Epoch)
	}
}

// A member that knows no peer (a single node) keeps serving whatever how
// long the registry is away.
func TestMemberAloneKeepsServing(t *testing.T) {
	const name = streamname.Name("live/alone")
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	mem := NewMemory(MemoryConfig{NodeTimeout: 5 * time.Second, Clock: clk})
	defer mem.Close()
	var down atomic.Bool
	lost := make(chan streamname.Name, 1)
	m := NewMember(MemberConfig{
		Self:        Node{ID: "node-a", HTTPAddr: "node-a:8080"},
		Registry:    unreachable{mem, &down},
		OnLost:      func(n streamname.Name) { lost <- n },
		Clock:       clk,
		Every:       time.Second,
		NodeTimeout: 5 * time.Second,
		Reach:       func(context.Context, Node) error { t.Error("a peer asked, none is known"); return errors.New("none") },
		Logger:      slog.New(slog.DiscardHandler),
	})
	m.Start()
	defer m.Close()
	if _, _, err := m.Claim(name, ""); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	for range 20 {
		clk.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	select {
	case n := <-lost:
		t.Fatalf("a node alone gave up %s", n)
	case <-time.After(100 * time.Millisecond):
	}
	if len(m.Claims()) != 1 {
		t.Errorf("claims %v, want the stream's", m.Claims())
	}
}

// hanging is a registry out of reach without an answer, as behind a
// blackhole: Beat, Release and Leave wait until their context ends.
type hanging struct{ *Memory }

func (hanging) Beat(ctx context.Context, _ BeatRecord) ([]Claim, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
}

func (hanging) Release(ctx context.Context, _ Claim) error { <-ctx.Done(); return ctx.Err() }

func (hanging) Leave(ctx context.Context, _ NodeID) error { <-ctx.Done(); return ctx.Err() }

// A node whose registry never answers still shuts down in bounded time:
// Drain waits for its beat at most drainWait, and Close gives the release
// of every claim and the leave one deadline together, not one each.
func TestMemberShutsDownWithoutRegistry(t *testing.T) {
	mem := NewMemory(MemoryConfig{NodeTimeout: 5 * time.Second})
	defer mem.Close()
	m := NewMember(MemberConfig{
		Self:        Node{ID: "node-a", HTTPAddr: "node-a:8080"},
		Registry:    hanging{mem},
		Every:       time.Hour,
		NodeTimeout: 5 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	})
	for i := range 5 {
		c, err := mem.Claim(context.Background(), streamname.Name(fmt.Sprintf("live/s%d", i)), "node-a", "")
		if err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		m.claims[c.Stream] = c
		m.mu.Unlock()
	}
	start := time.Now()
	m.Drain()
	if d := time.Since(start); d < drainWait || d > drainWait+time.Second {
		t.Errorf("Drain returned after %v, want after drainWait (%v)", d, drainWait)
	}
	start = time.Now()
	m.Close()
	if d := time.Since(start); d > leaveTimeout+time.Second {
		t.Errorf("Close returned after %v with 5 claims to release, want within %v", d, leaveTimeout)
	}
	m.Drain() // after Close: nothing to do, no panic
}
