package cluster

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// On the memory registry's clock, a node, a claim and a relay last exactly
// one NodeTimeout from their last refresh: alive a nanosecond before,
// gone at the moment.
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
	if rs, _ := reg.Relays(ctx, name); len(rs) != 0 {
		t.Fatalf("relays at their timeout: %v", rs)
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
