package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/streamname"
)

// routeNodes registers nodes with the given viewers (capacity 100 each).
func routeNodes(t *testing.T, reg Registry, viewers map[NodeID]int, region map[NodeID]string) {
	t.Helper()
	for id, v := range viewers {
		n := Node{ID: id, Capacity: 100, State: StateServing, Region: region[id], HTTPAddr: string(id) + ":8080", Load: Load{Viewers: v}}
		if err := reg.Heartbeat(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
}

func routeN(t *testing.T, r *Router, req RouteRequest, n int) map[NodeID]int {
	t.Helper()
	got := map[NodeID]int{}
	for range n {
		node, err := r.Route(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		got[node.ID]++
	}
	return got
}

func TestLeastLoadedSpreadsABurst(t *testing.T) {
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	routeNodes(t, reg, map[NodeID]int{"a": 0, "b": 10, "c": 20}, nil)
	sel, _ := NewSelector("least-loaded")
	// Routes made before the next heartbeat count as load: 60 viewers
	// even the three nodes out at 30 each.
	got := routeN(t, NewRouter(reg, sel), RouteRequest{Stream: "live/x"}, 60)
	if got["a"] != 30 || got["b"] != 20 || got["c"] != 10 {
		t.Errorf("routed %v, want a:30 b:20 c:10", got)
	}
}

func TestSelectors(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/x")
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	routeNodes(t, reg, map[NodeID]int{"a": 10, "b": 50, "c": 90, "full": 100}, map[NodeID]string{"c": "eu"})
	if err := reg.Heartbeat(ctx, Node{ID: "draining", Capacity: 100, State: StateDraining}); err != nil {
		t.Fatal(err)
	}
	// Idle but out of CPU: full.
	if err := reg.Heartbeat(ctx, Node{ID: "busy", Capacity: 100, State: StateServing, Load: Load{CPU: 0.9}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Claim(ctx, name, "b", ""); err != nil {
		t.Fatal(err)
	}
	route := func(sel string, req RouteRequest) NodeID {
		s, err := NewSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		n, err := NewRouter(reg, s).Route(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return n.ID
	}
	if got := route("least-loaded", RouteRequest{Stream: name}); got != "a" {
		t.Errorf("least-loaded: %s, want a", got)
	}
	if got := route("affinity", RouteRequest{Stream: name}); got != "b" {
		t.Errorf("affinity: %s, want b, which has the stream under its cap", got)
	}
	if got := route("affinity", RouteRequest{Stream: "live/other"}); got != "a" {
		t.Errorf("affinity for a stream nobody has: %s, want the least loaded", got)
	}
	if got := route("least-loaded", RouteRequest{Stream: name, Region: "eu"}); got != "c" {
		t.Errorf("least-loaded in region eu: %s, want c", got)
	}
	if got := route("least-loaded", RouteRequest{Stream: name, Region: "ap"}); got != "a" {
		t.Errorf("least-loaded in a region with no node: %s, want a", got)
	}
	for range 50 {
		if got := route("p2c", RouteRequest{Stream: name}); got == "c" || got == "full" || got == "draining" || got == "busy" {
			t.Fatalf("p2c chose %s: the most loaded of any pair, full (viewers or CPU), or draining", got)
		}
	}
	// Rendezvous: every router agrees, and a stream moves only when its
	// node goes.
	placed := map[streamname.Name]NodeID{}
	for _, s := range []streamname.Name{"live/1", "live/2", "live/3", "live/4", "live/5", "live/6"} {
		placed[s] = route("hash", RouteRequest{Stream: s})
		if again := route("hash", RouteRequest{Stream: s}); again != placed[s] {
			t.Errorf("hash placed %s on %s, then %s", s, placed[s], again)
		}
	}
	if err := reg.Leave(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	for s, was := range placed {
		if now := route("hash", RouteRequest{Stream: s}); was != "a" && now != was {
			t.Errorf("hash moved %s from %s to %s when another node left", s, was, now)
		}
	}
}

// LeastCPU ranks by CPU, then ID, whatever the viewers: transcoding jobs
// cost CPU.
func TestLeastCPU(t *testing.T) {
	cands := []Candidate{
		{Node: Node{ID: "c", Load: Load{CPU: 0.2, Viewers: 0}}},
		{Node: Node{ID: "a", Load: Load{CPU: 0.5, Viewers: 0}}},
		{Node: Node{ID: "b", Load: Load{CPU: 0.2, Viewers: 90}}},
	}
	var order []NodeID
	for len(cands) > 0 {
		c := LeastCPU{}.Select(RouteRequest{}, cands)
		order = append(order, c.ID)
		cands = slices.DeleteFunc(cands, func(x Candidate) bool { return x.ID == c.ID })
	}
	if !slices.Equal(order, []NodeID{"b", "c", "a"}) {
		t.Errorf("order %v, want [b c a]", order)
	}
}

func TestRouteWithoutNodes(t *testing.T) {
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	sel, _ := NewSelector("least-loaded")
	if _, err := NewRouter(reg, sel).Route(context.Background(), RouteRequest{Stream: "live/x"}); !errors.Is(err, ErrNoNode) {
		t.Errorf("Route with no nodes: %v, want ErrNoNode", err)
	}
	routeNodes(t, reg, map[NodeID]int{"full": 100, "fuller": 150}, nil)
	if got := routeN(t, NewRouter(reg, sel), RouteRequest{Stream: "live/x"}, 1); got["full"] != 1 {
		t.Errorf("every node full: routed %v, want the least overloaded", got)
	}
	if _, err := NewSelector("random"); err == nil {
		t.Error("NewSelector accepted an unknown name")
	}
}

// readCounter counts a router's reads of the registry.
type readCounter struct {
	*Memory
	nodes, owners, relays atomic.Int64
}

func (c *readCounter) Nodes(ctx context.Context) ([]Node, error) {
	c.nodes.Add(1)
	return c.Memory.Nodes(ctx)
}

func (c *readCounter) Owner(ctx context.Context, name streamname.Name) (Claim, error) {
	c.owners.Add(1)
	return c.Memory.Owner(ctx, name)
}

func (c *readCounter) Relays(ctx context.Context, name streamname.Name) ([]Relay, error) {
	c.relays.Add(1)
	return c.Memory.Relays(ctx, name)
}

// countedRouter is a router with selector sel over a registry of nodes
// with the given viewers that counts its reads, on a clock that moves only
// when the test sets *now.
func countedRouter(t *testing.T, sel string, viewers map[NodeID]int) (*readCounter, *Router, *time.Time) {
	t.Helper()
	reg := &readCounter{Memory: NewMemory(MemoryConfig{})}
	t.Cleanup(func() { reg.Close() })
	routeNodes(t, reg, viewers, nil)
	s, err := NewSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(reg, s)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.now = func() time.Time { return now }
	return reg, r, &now
}

// A router reads the nodes, and (for the affinity selector, the one that
// asks) a stream's owner and relays, once a RouterMaxAge however many
// viewers it places, sharing a read among the
// requests that wait for it; its pending counts keep the spread even in
// between; a change in the registry shows once the reads are that old.
func TestRouterReadsOnceAMaxAge(t *testing.T) {
	reg, r, now := countedRouter(t, "affinity", map[NodeID]int{"a": 0, "b": 0})

	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[NodeID]int{}
	for i := range 100 {
		wg.Go(func() {
			n, err := r.Route(context.Background(), RouteRequest{Stream: streamname.Name(fmt.Sprintf("live/s%d", i%5))})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[n.ID]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if got["a"] != 50 || got["b"] != 50 {
		t.Errorf("100 viewers on fresh nodes went %v, want 50 each", got)
	}
	if n, o, rl := reg.nodes.Load(), reg.owners.Load(), reg.relays.Load(); n != 1 || o != 5 || rl != 5 {
		t.Errorf("registry read %d times for nodes, %d for owners, %d for relays; want 1, 5 and 5 (one per stream)", n, o, rl)
	}
	// A node joins: routes see it once the reads are RouterMaxAge old.
	routeNodes(t, reg, map[NodeID]int{"c": 0}, nil)
	*now = now.Add(RouterMaxAge - time.Nanosecond)
	if got := routeN(t, r, RouteRequest{Stream: "live/s0"}, 10); got["c"] != 0 {
		t.Errorf("a node that joined since the last read got %d viewers", got["c"])
	}
	*now = now.Add(time.Nanosecond)
	if got := routeN(t, r, RouteRequest{Stream: "live/s0"}, 10); got["c"] != 10 {
		t.Errorf("once the reads expired, the new empty node got %d of 10 viewers, want 10: %v", got["c"], got)
	}
	if n := reg.nodes.Load(); n != 2 {
		t.Errorf("nodes read %d times, want 2", n)
	}
	// Other selectors never read a stream's holders.
	owners, relays := reg.owners.Load(), reg.relays.Load()
	ll, _ := NewSelector("least-loaded")
	if _, err := NewRouter(reg, ll).Route(context.Background(), RouteRequest{Stream: "live/new"}); err != nil || reg.owners.Load() != owners || reg.relays.Load() != relays {
		t.Errorf("least-loaded route: %v; owners read %d more times, relays %d, want none", err, reg.owners.Load()-owners, reg.relays.Load()-relays)
	}
}

// A router keeps the holders of at most routerStreams streams.
func TestRouterStreamsBounded(t *testing.T) {
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	routeNodes(t, reg, map[NodeID]int{"a": 0}, nil)
	sel, _ := NewSelector("affinity")
	r := NewRouter(reg, sel)
	for i := range routerStreams + 10 {
		if _, err := r.Route(context.Background(), RouteRequest{Stream: streamname.Name(fmt.Sprintf("live/s%d", i))}); err != nil {
			t.Fatal(err)
		}
		if n := len(r.holders); n > routerStreams {
			t.Fatalf("%d streams kept, want at most %d", n, routerStreams)
		}
	}
}

// A node that began draining since the router last read the nodes is not
// chosen: the router reads the chosen node's record, finds it draining
// and decides again on all the nodes read anew.
func TestRouterConfirmsItsChoice(t *testing.T) {
	reg, r, _ := countedRouter(t, "least-loaded", map[NodeID]int{"a": 0, "b": 50})
	if got := routeN(t, r, RouteRequest{Stream: "live/x"}, 1); got["a"] != 1 {
		t.Fatalf("first viewer went %v, want to the empty node a", got)
	}
	drain := Node{ID: "a", Capacity: 100, State: StateDraining, HTTPAddr: "a:8080"}
	if err := reg.Heartbeat(context.Background(), drain); err != nil {
		t.Fatal(err)
	}
	if got := routeN(t, r, RouteRequest{Stream: "live/x"}, 5); got["b"] != 5 {
		t.Errorf("viewers after a began draining went %v, want all to b", got)
	}
	if n := reg.nodes.Load(); n != 2 {
		t.Errorf("nodes read %d times, want 2: once, and once more on finding a draining", n)
	}
}
