package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// On the memory registry's clock, a node and a claim last exactly one
// NodeTimeout from their last refresh: alive a nanosecond before, gone at
// the moment; a relay counts while its node does.
func TestMemoryExpiryOnItsClock(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{NodeTimeout: 5 * time.Second, Clock: clk})
	const name = streamname.Name("live/clock")
	for _, id := range []NodeID{"a", "b"} {
		if err := reg.Heartbeat(ctx, Node{ID: id, State: StateServing}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := reg.Claim(ctx, name, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetRelay(ctx, name, Relay{Node: "b", Upstream: "a"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := reg.Node(ctx, "a"); !n.Seen.Equal(clk.Now()) {
		t.Fatalf("Seen = %v, want the registry's clock %v", n.Seen, clk.Now())
	}

	clk.Advance(5*time.Second - time.Nanosecond)
	if _, err := reg.Owner(ctx, name); err != nil {
		t.Fatalf("Owner a nanosecond before the lease ends: %v", err)
	}
	if rs, _ := reg.Relays(ctx, name); len(rs) != 1 {
		t.Fatalf("relays a nanosecond before expiry: %v", rs)
	}
	// node-a renews its claim but sends no heartbeat.
	if err := reg.Renew(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := reg.Heartbeat(ctx, Node{ID: "b", State: StateServing}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Nanosecond)
	if _, err := reg.Node(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node-a at its timeout: %v, want ErrNotFound", err)
	}
	// A relay record outlives a node timeout (RelayLife) while its node
	// lives.
	if rs, _ := reg.Relays(ctx, name); len(rs) != 1 {
		t.Fatalf("relays of a live node at a node timeout: %v", rs)
	}
	// The claim's lease still runs, but its node is dead: node-b takes it.
	cb, err := reg.Claim(ctx, name, "b", "")
	if err != nil || cb.Epoch <= c.Epoch {
		t.Fatalf("claim by node-b after node-a died: %+v, %v", cb, err)
	}
	clk.Advance(5 * time.Second)
	if _, err := reg.Owner(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Owner once node-b's lease ran out: %v, want ErrNotFound", err)
	}
	if rs, _ := reg.Relays(ctx, name); len(rs) != 0 {
		t.Fatalf("relays once their node died: %v", rs)
	}

	// The name's epoch counter outlives the lease by EpochTTL from the
	// last claim; after that the name numbers from the clock again.
	if c.Epoch != uint64(clk.Now().Add(-10*time.Second).UnixMilli()) {
		t.Fatalf("first epoch %d, want the clock in ms at the claim", c.Epoch)
	}
	clk.Advance(EpochTTL - 5*time.Second - time.Nanosecond)
	if err := reg.Heartbeat(ctx, Node{ID: "b", State: StateServing}); err != nil {
		t.Fatal(err)
	}
	next, err := reg.Claim(ctx, name, "b", "")
	if err != nil || next.Epoch != cb.Epoch+1 {
		t.Fatalf("claim before the counter expires: %+v, %v; want epoch %d", next, err, cb.Epoch+1)
	}
	if err := reg.Release(ctx, next); err != nil {
		t.Fatal(err)
	}
	clk.Advance(EpochTTL)
	if err := reg.Heartbeat(ctx, Node{ID: "b", State: StateServing}); err != nil {
		t.Fatal(err)
	}
	later, err := reg.Claim(ctx, name, "b", "")
	if err != nil || later.Epoch != uint64(clk.Now().UnixMilli()) || later.Epoch <= next.Epoch {
		t.Fatalf("claim after the counter expired: %+v, %v; want epoch %d, above %d", later, err, clk.Now().UnixMilli(), next.Epoch)
	}
	if n := len(reg.epochs); n != 1 {
		t.Fatalf("%d epoch counters held, want 1", n)
	}
}

// hubOf opens relayed streams as new streams of their own.
type hubOf struct{}

func (hubOf) OpenRelay(name streamname.Name, from string) (*stream.Publisher, error) {
	return stream.New(name, stream.Config{}).Attach(stream.PublisherInfo{Protocol: "relay", RemoteAddr: from})
}

// A relay whose upstream cannot be reached retries with backoff on the
// relays' clock, and ends once its idle time has passed on that clock
// (without viewers or an upstream), whatever the wall clock does.
func TestRelayGivesUpOnItsClock(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clock.NewFake(start)
	reg := NewMemory(MemoryConfig{Clock: clk, NodeTimeout: time.Hour})
	const name = streamname.Name("live/idle")
	// The owner's address refuses connections.
	if err := reg.Heartbeat(ctx, Node{ID: "owner", State: StateServing, HTTPAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Claim(ctx, name, "owner", ""); err != nil {
		t.Fatal(err)
	}
	m := NewRelays(RelayConfig{Self: "self", Registry: reg, Idle: 10 * time.Second, Clock: clk,
		Logger: slog.New(slog.DiscardHandler)}, hubOf{})
	defer m.Close()
	if err := m.Pull(name, nil); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	running := func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.active[name] != nil
	}
	for i := 0; running(); i++ {
		if i == 1000 {
			t.Fatalf("relay still running after %v of its clock", clk.Now().Sub(start))
		}
		clk.Advance(100 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	if got := clk.Now().Sub(start); got < 10*time.Second {
		t.Fatalf("relay gave up after %v of its clock, want at least its idle time (10s)", got)
	}
}

// Two nodes whose wall clocks are apart: a signed internal request is
// accepted while the clocks are at most clock.MaxSkew apart, either way,
// and refused past it, to the second.
func TestPeerRequestsClockSkew(t *testing.T) {
	const secret = "a-cluster-secret-for-tests"
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		skew time.Duration // the receiver's clock minus the sender's
		ok   bool
	}{
		{0, true},
		{clock.MaxSkew, true},
		{-clock.MaxSkew, true},
		{clock.MaxSkew + 999*time.Millisecond, true}, // signed times are whole seconds
		{clock.MaxSkew + time.Second, false},
		{-clock.MaxSkew - time.Second, false},
		{time.Hour, false},
		{-time.Hour, false},
	} {
		sender, receiver := NewPeerClient(secret, func() NodeID { return "node-b" }), NewPeerClient(secret, func() NodeID { return "node-a" })
		sclk, rclk := clock.NewFake(start), clock.NewFake(start)
		sender.clock, receiver.clock = sclk, rclk
		rclk.Jump(c.skew)
		req := httptest.NewRequest(http.MethodGet, "http://a:8080"+PullPath+"live/stream", nil)
		sender.Sign(req)
		node, err := receiver.Verify(req)
		if c.ok && (err != nil || node != "node-b") {
			t.Errorf("receiver %v from the sender: %q, %v; want accepted from node-b", c.skew, node, err)
		}
		if !c.ok && !errors.Is(err, ErrUnauthorized) {
			t.Errorf("receiver %v from the sender: %q, %v; want ErrUnauthorized", c.skew, node, err)
		}
	}
}

// A node whose wall clock is stepped an hour forward, then an hour back
// (the registry's clock with it: one Fake here) keeps its claim, renewed
// on the monotonic clock at the epoch it had and never reported lost; and
// the claim of a node that died without releasing it still ends exactly
// one lease of elapsed time after its last renewal, neither cut short by
// the step forward nor stretched by the step back.
func TestClaimsAcrossWallClockJumps(t *testing.T) {
	ctx := context.Background()
	const (
		name  = streamname.Name("live/jump")
		lease = 5 * time.Second
	)
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{NodeTimeout: lease, Clock: clk})
	lost := make(chan streamname.Name, 1)
	beats := make(chan struct{}, 10) // one after each heartbeat's renewals
	m := NewMember(MemberConfig{
		Self:     Node{ID: "node-a", HTTPAddr: "127.0.0.1:1"},
		Registry: reg,
		Relays:   func() map[streamname.Name]NodeID { beats <- struct{}{}; return nil },
		OnLost:   func(n streamname.Name) { lost <- n },
		Clock:    clk,
		Logger:   slog.New(slog.DiscardHandler),
	})
	m.Start()
	defer m.Close()
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
	release, _, err := m.Claim(name, "")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	held, err := reg.Owner(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	kept := func(when string) {
		t.Helper()
		if c, err := reg.Owner(ctx, name); err != nil || c.Node != "node-a" || c.Epoch != held.Epoch {
			t.Fatalf("%s: owner %+v, %v; want node-a at epoch %d", when, c, err, held.Epoch)
		}
		if cs := m.Claims(); len(cs) != 1 || cs[0].Epoch != held.Epoch {
			t.Fatalf("%s: the member holds %+v", when, cs)
		}
		if _, err := reg.Node(ctx, "node-a"); err != nil {
			t.Fatalf("%s: node-a: %v", when, err)
		}
		select {
		case n := <-lost:
			t.Fatalf("%s: the member gave up %s", when, n)
		default:
		}
	}

	for i, step := range []time.Duration{time.Hour, -time.Hour} {
		// node-dead claims a stream and dies a second before the step.
		dead := streamname.Name(fmt.Sprintf("live/dead-%d", i))
		if err := reg.Heartbeat(ctx, Node{ID: "node-dead"}); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Claim(ctx, dead, "node-dead", ""); err != nil {
			t.Fatal(err)
		}
		beat()
		wallBefore := clk.Now()
		clk.Jump(step)
		if got := clk.Now().Sub(wallBefore); got != step {
			t.Fatalf("the wall clock moved %v, want %v", got, step)
		}
		kept(fmt.Sprintf("right after a %v step", step))
		for range lease/heartbeatEvery - 2 {
			beat()
		}
		// lease less a second of elapsed time since node-dead's claim.
		if c, err := reg.Owner(ctx, dead); err != nil || c.Node != "node-dead" {
			t.Fatalf("%v step: node-dead's claim a second before its lease ends: %+v, %v", step, c, err)
		}
		beat()
		if c, err := reg.Owner(ctx, dead); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%v step: node-dead's claim once its lease ran out: %+v, %v; want ErrNotFound", step, c, err)
		}
		if _, err := reg.Node(ctx, "node-dead"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%v step: node-dead alive after its timeout: %v", step, err)
		}
		if c, err := reg.Claim(ctx, dead, "node-a", ""); err != nil || c.Node != "node-a" {
			t.Fatalf("%v step: node-a claiming node-dead's stream: %+v, %v", step, c, err)
		}
		// Three leases more: node-a's claim is renewed all along.
		for range 3 * lease / heartbeatEvery {
			beat()
		}
		kept(fmt.Sprintf("three leases after a %v step", step))
	}
}

// A stream record's timeline lasts TimelineTTL from its last write on the
// memory registry's clock, well past the record's NodeTimeout.
func TestMemoryTimelineTTL(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := NewMemory(MemoryConfig{NodeTimeout: 5 * time.Second, Clock: clk})
	const name = streamname.Name("live/timeline")
	seen := Timeline{DTS: 5000, At: clk.Now().UnixMilli()}
	if err := reg.SetStreamInfo(ctx, name, StreamInfo{Node: "a", Timeline: &seen}); err != nil {
		t.Fatal(err)
	}
	seen.DTS = 1 // the registry keeps its own copy
	clk.Advance(TimelineTTL - time.Nanosecond)
	if err := reg.Heartbeat(ctx, Node{ID: "b", State: StateServing}); err != nil {
		t.Fatal(err)
	}
	c, err := reg.Claim(ctx, name, "b", "")
	if err != nil || c.Prior == nil || c.Prior.DTS != 5000 {
		t.Fatalf("claim a nanosecond before TimelineTTL: %+v, %v; want the timeline at 5000", c, err)
	}
	if err := reg.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Nanosecond)
	if c, err := reg.Claim(ctx, name, "b", ""); err != nil || c.Prior != nil {
		t.Fatalf("claim at TimelineTTL: %+v, %v; want no timeline", c, err)
	}
}
