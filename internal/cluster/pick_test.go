package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// Pick leaves full nodes out unless all are, prefers the requested
// region, and offers the selector the rest in their order.
func TestPick(t *testing.T) {
	cand := func(id NodeID, region string, viewers int) Candidate {
		return Candidate{Node: Node{ID: id, Region: region, Capacity: 10, State: StateServing, Load: Load{Viewers: viewers}}}
	}
	cases := []struct {
		name   string
		cands  []Candidate
		region string
		offer  []NodeID
	}{
		{"all with room", []Candidate{cand("a", "", 1), cand("b", "", 2)}, "", []NodeID{"a", "b"}},
		{"full left out", []Candidate{cand("a", "", 10), cand("b", "", 2), cand("c", "", 9)}, "", []NodeID{"b", "c"}},
		{"all full: all", []Candidate{cand("a", "", 10), cand("b", "", 12)}, "", []NodeID{"a", "b"}},
		{"region first", []Candidate{cand("a", "us", 1), cand("b", "eu", 9), cand("c", "eu", 5)}, "eu", []NodeID{"b", "c"}},
		{"region full: any with room", []Candidate{cand("a", "us", 1), cand("b", "eu", 10), cand("c", "ap", 5)}, "eu", []NodeID{"a", "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var offered []NodeID
			sel := selectFunc(func(_ RouteRequest, cands []Candidate) Candidate {
				for _, c := range cands {
					offered = append(offered, c.ID)
				}
				return cands[0]
			})
			c, err := Pick(sel, RouteRequest{Stream: "live/x", Region: tc.region}, tc.cands)
			if err != nil || !slices.Equal(offered, tc.offer) || c.ID != tc.offer[0] {
				t.Errorf("Pick = %s, %v, offered %v; want %v", c.ID, err, offered, tc.offer)
			}
		})
	}
	if _, err := Pick(leastLoaded{}, RouteRequest{}, nil); err != ErrNoNode {
		t.Errorf("Pick of none = %v, want ErrNoNode", err)
	}
}

type selectFunc func(RouteRequest, []Candidate) Candidate

func (f selectFunc) Select(req RouteRequest, cands []Candidate) Candidate { return f(req, cands) }

// RendezvousHash spreads keys evenly over nodes with similar names, and a
// node joining takes its share from every other node and no more.
func TestRendezvousHashBalance(t *testing.T) {
	const nodes, keys = 100, 20000
	owner := func(n int, key string) int {
		best, bestScore := 0, uint64(0)
		for i := range n {
			if s := RendezvousHash(NodeID(fmt.Sprintf("node-%03d", i)), key); i == 0 || s > bestScore {
				best, bestScore = i, s
			}
		}
		return best
	}
	count := make([]int, nodes+1)
	moved := 0
	for k := range keys {
		key := fmt.Sprintf("live/stream-%d", k)
		before, after := owner(nodes, key), owner(nodes+1, key)
		count[before]++
		if before != after {
			moved++
			if after != nodes {
				t.Fatalf("%s moved from node %d to node %d, not to the node that joined", key, before, after)
			}
		}
	}
	mean := keys / nodes
	lo, hi := slices.Min(count[:nodes]), slices.Max(count[:nodes])
	// A binomial share of 200 keys: 3.5 standard deviations is about ±50.
	if lo < mean*2/3 || hi > mean*4/3 {
		t.Errorf("keys per node from %d to %d, want within a third of the mean %d", lo, hi, mean)
	}
	if want := keys / (nodes + 1); moved < want*2/3 || moved > want*4/3 {
		t.Errorf("a node joining took %d keys, want about %d", moved, want)
	}
}

// A seeded p2c selector repeats its choices.
func TestSeededSelectorRepeats(t *testing.T) {
	var cands []Candidate
	for i := range 50 {
		cands = append(cands, Candidate{Node: Node{ID: NodeID(rune('A' + i)), Capacity: 100, Load: Load{Viewers: i % 7}}})
	}
	run := func() []NodeID {
		sel, err := NewSeededSelector("p2c", rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatal(err)
		}
		var got []NodeID
		for range 20 {
			got = append(got, sel.Select(RouteRequest{}, cands).ID)
		}
		return got
	}
	if a, b := run(), run(); !slices.Equal(a, b) {
		t.Errorf("seeded p2c chose %v, then %v", a, b)
	}
}

// ChooseUpstream skips the nodes of the via chain, and with Direct asks
// for the owner only.
func TestChooseUpstreamViaAndDirect(t *testing.T) {
	ctx := context.Background()
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	for _, id := range []NodeID{"owner", "mid-1", "mid-2"} {
		if err := reg.Heartbeat(ctx, Node{ID: id, State: StateServing}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Claim(ctx, "live/x", "owner", ""); err != nil {
		t.Fatal(err)
	}
	q := UpstreamQuery{Self: "edge", Parents: []NodeID{"mid-1", "mid-2"}}
	for _, tc := range []struct {
		via    []NodeID
		direct bool
		want   NodeID
	}{{nil, false, "mid-1"}, {[]NodeID{"mid-1"}, false, "mid-2"}, {nil, true, "owner"}} {
		q.Via, q.Direct = tc.via, tc.direct
		if n, err := ChooseUpstream(ctx, reg, "live/x", q); err != nil || n.ID != tc.want {
			t.Errorf("via %v direct %v: %s, %v; want %s", tc.via, tc.direct, n.ID, err, tc.want)
		}
	}
}
