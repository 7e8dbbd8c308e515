// Package sim simulates a meshcast cluster at internet scale, without
// sockets, by driving meshcast's own placement code: the in-memory registry
// (cluster.Memory) on a fake clock, the route decision and its selectors
// (cluster.Pick, cluster.NewSeededSelector) and a relay's choice of
// upstream (cluster.ChooseUpstream), for simulated nodes in tiers and
// regions, streams of Zipf popularity and viewers arriving over simulated
// time; then it drains a share of the nodes (they take no new work and
// leave after a grace), kills a share, and then a whole region, and
// measures how long the cluster takes to place every viewer again.
//
// A run is deterministic for a seed: one goroutine, a seeded generator,
// an event queue ordered by time and then by scheduling order.
package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
)

// Config is a scenario. Zero fields take the defaults written in their
// comments (Defaults).
type Config struct {
	// Nodes in the cluster; defaults to 1000.
	Nodes int `json:"nodes"`
	// Regions the nodes are spread over evenly; defaults to 5.
	Regions int `json:"regions"`
	// Tiers: 1, every node owns streams and serves viewers (a star); 2,
	// origins own streams and edges pull from them (a star of edges); 3,
	// edges pull through mid-tier nodes of their region (--parent, a
	// tree). Defaults to 3.
	Tiers int `json:"tiers"`
	// Mesh lets relays pull from a peer that pulls from the owner (--mesh).
	Mesh bool `json:"mesh"`
	// Streams published, all from the start; defaults to 10000.
	Streams int `json:"streams"`
	// Zipf is the exponent of the streams' popularity; defaults to 1.1.
	Zipf float64 `json:"zipf"`
	// Viewers arrive evenly over Arrival and stay; defaults to 1,000,000
	// over 10 minutes.
	Viewers int           `json:"viewers"`
	Arrival time.Duration `json:"arrival_ns"`
	// Capacity is each edge's --capacity; defaults to twice the viewers
	// per edge, so the cluster runs at half its capacity before failures.
	Capacity int `json:"capacity"`
	// Balance is the selector: least-loaded (the default), p2c, affinity
	// or hash.
	Balance string `json:"balance"`
	// Drain is the share of nodes drained in the phase after the
	// arrivals, as meshcast drains on SIGTERM, one after another over a
	// DrainGrace (a rolling restart): each heartbeats as
	// cluster.StateDraining, so routers and relays choose other nodes,
	// and leaves the cluster DrainGrace later. Zero or negative: no drain
	// phase (the default).
	Drain float64 `json:"drain"`
	// DrainGrace is how long a draining node serves on before it leaves
	// (meshcast's --drain-grace); defaults to 30 seconds.
	DrainGrace time.Duration `json:"drain_grace_ns"`
	// Kill is the share of nodes killed at once after the drain; defaults
	// to 0.1. Negative: none.
	Kill float64 `json:"kill"`
	// NoRegionLoss skips phase 3, the loss of one region.
	NoRegionLoss bool `json:"no_region_loss"`
	// VirtualNodes is the points per node of the ring compared with
	// rendezvous hashing; defaults to 100.
	VirtualNodes int `json:"virtual_nodes"`
	// Seed makes the run; the same seed, the same run.
	Seed uint64 `json:"seed"`
	// Progress, when set, is called once a simulated second with the
	// share of the run done, 0 to 1.
	Progress func(done float64) `json:"-"`
}

// Timings of the simulated cluster and its clients. The cluster's own are
// meshcast's defaults (--node-timeout, --relay-idle, the heartbeat and the
// relays' backoff); the clients' are assumptions, said here.
const (
	heartbeatEvery = time.Second
	nodeTimeout    = cluster.DefaultNodeTimeout
	relayIdle      = 30 * time.Second
	firstBackoff   = 100 * time.Millisecond
	maxBackoff     = 2 * time.Second
	// A player whose connection broke, or that was refused, asks the
	// router again after playerRetry plus up to playerJitter.
	playerRetry  = time.Second
	playerJitter = time.Second
	// A publisher whose node died reconnects this much later, with its
	// credentials (a takeover, as in BENCHMARKS.md's failover).
	publisherRetry = 500 * time.Millisecond
	// settle is simulated after the last arrival before the failures.
	settle = 10 * time.Second
	// phaseCap bounds a failure phase that does not recover.
	phaseCap = 5 * time.Minute
	// RedisOpsPerSecond is the operations one Redis instance is taken to
	// serve, to size the cluster it can carry.
	RedisOpsPerSecond = 50000
)

// Defaults returns c with its zero fields set to their defaults.
func (c Config) Defaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Nodes, 1000)
	def(&c.Regions, 5)
	def(&c.Tiers, 3)
	def(&c.Streams, 10000)
	def(&c.Viewers, 1000000)
	def(&c.VirtualNodes, 100)
	if c.Zipf == 0 {
		c.Zipf = 1.1
	}
	if c.Arrival == 0 {
		c.Arrival = 10 * time.Minute
	}
	if c.DrainGrace == 0 {
		c.DrainGrace = 30 * time.Second
	}
	if c.Kill == 0 {
		c.Kill = 0.1
	}
	if c.Balance == "" {
		c.Balance = "least-loaded"
	}
	return c
}

// Validate reports a scenario the simulation cannot run.
func (c Config) Validate() error {
	switch {
	case c.Nodes < 1 || c.Nodes > 100000:
		return fmt.Errorf("sim: %d nodes: want 1 to 100000", c.Nodes)
	case c.Regions < 1 || c.Regions > c.Nodes:
		return fmt.Errorf("sim: %d regions for %d nodes", c.Regions, c.Nodes)
	case c.Tiers < 1 || c.Tiers > 3:
		return fmt.Errorf("sim: %d tiers: want 1, 2 or 3", c.Tiers)
	case c.Nodes/c.Regions < c.Tiers:
		return fmt.Errorf("sim: %d nodes a region cannot make %d tiers", c.Nodes/c.Regions, c.Tiers)
	case c.Streams < 1 || c.Streams > 10000000:
		return fmt.Errorf("sim: %d streams: want 1 to 10,000,000", c.Streams)
	case c.Viewers < 0 || c.Viewers > 100000000:
		return fmt.Errorf("sim: %d viewers: want 0 to 100,000,000", c.Viewers)
	case c.Zipf <= 0:
		return errors.New("sim: the Zipf exponent must be positive")
	case c.Arrival < time.Second || c.Arrival > 24*time.Hour:
		return fmt.Errorf("sim: arrival over %v: want 1s to 24h", c.Arrival)
	case c.Kill >= 1:
		return fmt.Errorf("sim: killing %.0f%% of the nodes leaves none", c.Kill*100)
	case c.Drain >= 1 || max(c.Drain, 0)+max(c.Kill, 0) >= 1:
		return fmt.Errorf("sim: draining %.0f%% and killing %.0f%% of the nodes leaves none", max(c.Drain, 0)*100, max(c.Kill, 0)*100)
	case c.DrainGrace < 0 || c.DrainGrace > time.Hour:
		return fmt.Errorf("sim: a drain grace of %v: want 0 to 1h", c.DrainGrace)
	case c.Capacity < 0:
		return errors.New("sim: negative capacity")
	case c.VirtualNodes < 1 || c.VirtualNodes > 10000:
		return fmt.Errorf("sim: %d virtual nodes: want 1 to 10000", c.VirtualNodes)
	}
	if _, err := cluster.NewSelector(c.Balance); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// Result is a run's report.
type Result struct {
	Config Config `json:"config"`
	// OriginNodes, MidNodes and EdgeNodes are the tiers' sizes.
	OriginNodes int `json:"origin_nodes"`
	MidNodes    int `json:"mid_nodes"`
	EdgeNodes   int `json:"edge_nodes"`
	Capacity    int `json:"capacity"`
	// Phases: "steady" (every viewer arrived), "drain" (Drain of the
	// nodes drained, then gone), "kill" (Kill of the nodes killed at
	// once), "region" (one region lost).
	Phases []Phase `json:"phases"`
	// Ops are the registry's operations a second, by kind, over the last
	// minute of arrivals (or all of them, when shorter).
	Ops Ops `json:"registry_ops"`
	// Events is how many simulation events ran; SimTime the simulated
	// time they covered.
	Events  int64         `json:"events"`
	SimTime time.Duration `json:"sim_time_ns"`
	// Violations lists every invariant found broken; none in a good run.
	Violations []string `json:"violations"`
}

// Phase is the cluster at the end of a phase, and for a failure how it
// recovered.
type Phase struct {
	Name string `json:"name"`
	// At is when the phase began (the failure, for kill and region; the
	// first node starting to drain, for drain).
	At time.Duration `json:"at_ns"`
	// Killed nodes, or Drained nodes (draining, then gone after the
	// grace), and the viewers they held (orphaned).
	Killed   int `json:"killed_nodes"`
	Drained  int `json:"drained_nodes,omitempty"`
	Orphaned int `json:"orphaned_viewers"`
	// Replaced is how long after the failure (for drain, the last
	// drained node's departure, under 2 DrainGrace after At) the last
	// orphaned viewer was placed on a live node; Restored, until every
	// viewer's stream flowed again (every relay reattached, every stream
	// owned); -1 if not within the phase's bound.
	Replaced time.Duration `json:"replaced_ns"`
	Restored time.Duration `json:"restored_ns"`
	// FailedAttempts are viewers' connections refused on the way
	// (routed to a dead node not yet expired, or a stream without owner),
	// over the whole phase (for drain, the grace too).
	FailedAttempts int64 `json:"failed_attempts"`
	Snapshot
}

// Snapshot is the cluster's placement at one moment.
type Snapshot struct {
	LiveNodes int `json:"live_nodes"`
	Placed    int `json:"placed_viewers"`
	Unplaced  int `json:"unplaced_viewers"`
	// OriginEgress is the streams origin-tier nodes send to relays, in
	// streams' worth (one per pull); Pulls, every relay connection.
	OriginEgress int `json:"origin_egress"`
	Pulls        int `json:"pulls"`
	// MaxUpstreams is the most upstreams any node has for one stream: 1.
	MaxUpstreams int `json:"max_upstreams_per_stream_per_node"`
	// LoadMax and LoadMean are viewers per live edge.
	LoadMax  int     `json:"load_max"`
	LoadMean float64 `json:"load_mean"`
	// Relays per stream: nodes relaying it, the owner not counted.
	RelaysMean float64 `json:"relays_per_stream_mean"`
	RelaysP99  int     `json:"relays_per_stream_p99"`
	RelaysMax  int     `json:"relays_per_stream_max"`
}

// Ops are registry operations a second.
type Ops struct {
	Window  time.Duration `json:"window_ns"`
	ByKind  []KindRate    `json:"by_kind"`
	Total   float64       `json:"total"`
	PerNode float64       `json:"per_node"`
	// MaxNodes is the largest cluster one Redis serving
	// RedisOpsPerSecond carries, with as many viewers per node: the
	// routers' reads of the node list grow with the square of the nodes,
	// every other operation linearly.
	MaxNodes int `json:"max_nodes_per_redis"`
}

// KindRate is one kind's operations a second.
type KindRate struct {
	Kind string  `json:"kind"`
	Rate float64 `json:"per_second"`
}

// Topology returns the node IDs the scenario builds, by tier; the same
// IDs Run uses.
func Topology(c Config) (origins, mids, edges []cluster.NodeID) {
	for _, n := range layout(c.Defaults()) {
		switch {
		case n.tier == tierOrigin && n.edge:
			origins = append(origins, n.id)
			edges = append(edges, n.id)
		case n.tier == tierOrigin:
			origins = append(origins, n.id)
		case n.tier == tierMid:
			mids = append(mids, n.id)
		default:
			edges = append(edges, n.id)
		}
	}
	return origins, mids, edges
}
