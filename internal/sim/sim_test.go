package sim

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
)

// small is the default scenario at 1 %: 10 nodes in two regions (an
// origin, a mid-tier node and three edges each), 100 streams, 10,000
// viewers; then a node killed, then a region lost.
func small(balance string) Config {
	return Config{Nodes: 10, Regions: 2, Streams: 100, Viewers: 10000, Arrival: 2 * time.Minute, Balance: balance, Seed: 42}
}

func TestSimInvariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"least-loaded", small("least-loaded")},
		{"p2c", small("p2c")},
		{"affinity", small("affinity")},
		{"hash", small("hash")},
		{"mesh", func() Config { c := small("least-loaded"); c.Mesh = true; return c }()},
		{"two tiers", func() Config { c := small("least-loaded"); c.Tiers = 2; return c }()},
		{"one tier", func() Config { c := small("least-loaded"); c.Tiers = 1; return c }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range res.Violations {
				t.Error(v)
			}
			if got := len(res.Phases); got != 3 {
				t.Fatalf("%d phases, want steady, kill and region", got)
			}
			for _, p := range res.Phases {
				if p.MaxUpstreams != 1 {
					t.Errorf("%s: a node has %d upstreams for a stream, want 1", p.Name, p.MaxUpstreams)
				}
				if p.Placed != tc.cfg.Viewers || p.Unplaced != 0 {
					t.Errorf("%s: %d viewers placed, %d not; want all %d", p.Name, p.Placed, p.Unplaced, tc.cfg.Viewers)
				}
				if p.Restored < 0 || p.Replaced < 0 || p.Replaced > p.Restored {
					t.Errorf("%s: replaced after %v, restored after %v", p.Name, p.Replaced, p.Restored)
				}
			}
			// Before the failures no edge is past its capacity; after
			// them, the few left may all be (the router then spreads the
			// overload).
			if p := res.Phases[0]; p.LoadMax > res.Capacity {
				t.Errorf("%s: an edge holds %d viewers, over its capacity %d", p.Name, p.LoadMax, res.Capacity)
			}
			if tc.cfg.Tiers == 0 && res.Phases[0].OriginEgress > tc.cfg.Streams*res.MidNodes {
				t.Errorf("origin egress %d above %d streams × %d mid-tier nodes", res.Phases[0].OriginEgress, tc.cfg.Streams, res.MidNodes)
			}
			kill, region := res.Phases[1], res.Phases[2]
			if kill.Killed != 1 || region.Killed < 4 || region.Killed > 5 || kill.Killed+region.Killed+region.LiveNodes != 10 {
				t.Errorf("killed %d, then %d nodes, %d left; want 1, then what was left of region r0", kill.Killed, region.Killed, region.LiveNodes)
			}
			if region.Orphaned == 0 {
				t.Error("the region's loss orphaned no viewer")
			}
			k := res.Ops.ByKind
			if res.Ops.Total <= 0 || k[KindHeartbeat].Rate != 10 || k[KindRenewal].Rate != 2*float64(tc.cfg.Streams) {
				t.Errorf("registry ops %+v: want 10 heartbeats and %d renewals a second", res.Ops, 2*tc.cfg.Streams)
			}
		})
	}
}

// The same seed, the same run.
func TestSimDeterministic(t *testing.T) {
	cfg := small("p2c")
	a, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("two runs of seed %d differ:\n%+v\n%+v", cfg.Seed, a, b)
	}
	cfg.Seed++
	if c, _ := Run(context.Background(), cfg); reflect.DeepEqual(a.Phases, c.Phases) {
		t.Error("another seed made the same run")
	}
}

func TestSimRefusesBadScenarios(t *testing.T) {
	for _, c := range []Config{
		{Nodes: 4, Regions: 2, Tiers: 3},
		{Balance: "round-robin"},
		{Kill: 1},
		{Nodes: 3, Regions: 5},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%+v ran", c)
		}
	}
}

func TestSimStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, small("")); err == nil {
		t.Error("a cancelled run went on")
	}
}

// Rendezvous hashing moves only the leaving node's streams, and only
// those the joining node takes; every placement's shares average 1.
func TestAnalyzeRing(t *testing.T) {
	var nodes []cluster.NodeID
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		nodes = append(nodes, cluster.NodeID(id))
	}
	var keys []string
	for i := range 4000 {
		keys = append(keys, "live/s"+string(rune('A'+i%26))+string(rune('a'+i/26%26))+string(rune('0'+i/676)))
	}
	r := AnalyzeRing(nodes, keys, 50)
	if len(r.Placements) != 3 {
		t.Fatalf("%d placements", len(r.Placements))
	}
	left := rendezvousPlace(nodes, keys)
	onLeaving := 0
	for _, n := range left {
		if n == len(nodes)/2 {
			onLeaving++
		}
	}
	rv := r.Placements[0]
	if rv.Leave != onLeaving {
		t.Errorf("rendezvous moved %d streams when a node left, want its %d", rv.Leave, onLeaving)
	}
	for _, p := range r.Placements {
		if p.Balance.Min > 1 || p.Balance.Max < 1 || p.Join == 0 || p.Leave == 0 {
			t.Errorf("%s: %+v", p.Name, p)
		}
	}
	if r.Placements[2].Balance.Stddev >= r.Placements[1].Balance.Stddev {
		t.Errorf("virtual nodes did not even the ring out: %+v", r.Placements)
	}
}

// A mesh (--mesh) takes the origins' egress down to about one copy of a
// stream per region: edges pull from a peer that pulls from the origin.
func TestSimMeshSavesOriginEgress(t *testing.T) {
	c := small("least-loaded")
	c.Nodes, c.Tiers = 20, 2
	c.Kill, c.NoRegionLoss = -1, true // steady state only
	star, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	c.Mesh = true
	mesh, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	s, m := star.Phases[0].OriginEgress, mesh.Phases[0].OriginEgress
	if m > c.Streams*c.Regions || m*2 > s {
		t.Errorf("origin egress %d with --mesh, %d without, for %d streams in %d regions: want at most one copy a stream per region, and half the star's",
			m, s, c.Streams, c.Regions)
	}
	for _, v := range mesh.Violations {
		t.Error(v)
	}
}
