package cluster

import (
	"context"
	"errors"
	"slices"
	"testing"

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
