package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/streamname"
)

// RouteRequest is a viewer asking where to play a stream.
type RouteRequest struct {
	Stream streamname.Name
	// Region is the region to prefer; empty for any.
	Region string
}

// Candidate is a node that may take a viewer, as a Selector sees it.
type Candidate struct {
	Node
	// HasStream: the node owns or relays the stream already.
	HasStream bool
	// Pending counts viewers routed to the node since its last heartbeat,
	// which its reported load does not show yet.
	Pending int
}

// Score is the candidate's load from 0 (idle) to 1 (full): its viewers,
// reported and pending, against its capacity. CPU does not rank nodes (a
// per-second reading is too noisy to spread viewers by) but a node past
// cpuFull counts as full.
func (c Candidate) Score() float64 {
	return float64(c.Load.Viewers+c.Pending) / float64(max(c.Capacity, 1))
}

// full reports whether the candidate takes no more viewers.
func (c Candidate) full() bool { return c.Score() >= 1 || c.Load.CPU >= cpuFull }

// cpuFull is the share of its cores in use past which a node takes no new
// viewers while others can.
const cpuFull = 0.85

// A Selector picks the node for a viewer among candidates that are alive,
// serving, under capacity and in the preferred region when it has any.
type Selector interface {
	Select(req RouteRequest, cands []Candidate) Candidate
}

// affinityCap is the load up to which affinity keeps viewers on nodes that
// have the stream already.
const affinityCap = 0.8

// NewSelector returns the selector of the given name: least-loaded, p2c,
// affinity or hash.
func NewSelector(name string) (Selector, error) {
	switch name {
	case "least-loaded", "":
		return leastLoaded{}, nil
	case "p2c":
		return powerOfTwo{}, nil
	case "affinity":
		return affinity{}, nil
	case "hash":
		return rendezvous{}, nil
	}
	return nil, fmt.Errorf("cluster: unknown balancer %q", name)
}

// leastLoaded picks the candidate with the lowest load.
type leastLoaded struct{}

func (leastLoaded) Select(_ RouteRequest, cands []Candidate) Candidate {
	return slices.MinFunc(cands, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(a.Score(), b.Score()), cmp.Compare(a.Load.EgressBPS, b.Load.EgressBPS), cmp.Compare(a.ID, b.ID))
	})
}

// powerOfTwo picks the less loaded of two random candidates: near
// least-loaded balance without every router herding onto one node.
type powerOfTwo struct{}

func (powerOfTwo) Select(req RouteRequest, cands []Candidate) Candidate {
	if len(cands) < 2 {
		return cands[0]
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	return leastLoaded{}.Select(req, []Candidate{cands[i], cands[j]})
}

// affinity keeps viewers of a stream on the nodes that have it already
// while they are under affinityCap, so a stream is relayed to few nodes.
type affinity struct{}

func (affinity) Select(req RouteRequest, cands []Candidate) Candidate {
	var warm []Candidate
	for _, c := range cands {
		if c.HasStream && c.Score() < affinityCap {
			warm = append(warm, c)
		}
	}
	if len(warm) > 0 {
		return leastLoaded{}.Select(req, warm)
	}
	return leastLoaded{}.Select(req, cands)
}

// rendezvous hashes the stream name with each node's ID and takes the
// highest: every router agrees, and a stream stays on its node while that
// node is alive and under capacity.
type rendezvous struct{}

func (rendezvous) Select(req RouteRequest, cands []Candidate) Candidate {
	return slices.MaxFunc(cands, func(a, b Candidate) int {
		return cmp.Compare(RendezvousHash(a.ID, string(req.Stream)), RendezvousHash(b.ID, string(req.Stream)))
	})
}

// RendezvousHash is node id's score for key under rendezvous (highest
// random weight) hashing: every node that ranks nodes by it for a key
// agrees on the order, and a node leaving moves only its own keys. Live
// streams (the hash selector) and on-demand assets (their owners) are
// placed by it.
func RendezvousHash(id NodeID, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum64()
}

// LeastCPU picks the candidate using the least of its CPU, then the lowest
// ID. It places work that costs CPU rather than viewers: transcoding jobs.
type LeastCPU struct{}

// Select implements Selector.
func (LeastCPU) Select(_ RouteRequest, cands []Candidate) Candidate {
	return slices.MinFunc(cands, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(a.Load.CPU, b.Load.CPU), cmp.Compare(a.ID, b.ID))
	})
}

// ErrNoNode answers a route request when no node can take a viewer.
var ErrNoNode = errors.New("no node can take a viewer")

// Router answers where a viewer should play a stream: it filters the
// registry's live nodes and asks its Selector.
type Router struct {
	reg Registry
	sel Selector

	mu      sync.Mutex
	pending map[NodeID]pending
}

type pending struct {
	seen time.Time // the heartbeat the count is on top of
	n    int
}

// NewRouter routes with sel over the nodes in reg.
func NewRouter(reg Registry, sel Selector) *Router {
	return &Router{reg: reg, sel: sel, pending: make(map[NodeID]pending)}
}

// Route picks the node for a viewer of req.Stream.
func (r *Router) Route(ctx context.Context, req RouteRequest) (Node, error) {
	nodes, err := r.reg.Nodes(ctx)
	if err != nil {
		return Node{}, err
	}
	has := map[NodeID]bool{}
	if c, err := r.reg.Owner(ctx, req.Stream); err == nil {
		has[c.Node] = true
	}
	if relays, err := r.reg.Relays(ctx, req.Stream); err == nil {
		for _, rl := range relays {
			has[rl.Node] = true
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	var all, room, local []Candidate
	for _, n := range nodes {
		if n.State != StateServing {
			continue
		}
		p := r.pending[n.ID]
		if !p.seen.Equal(n.Seen) {
			p = pending{seen: n.Seen} // a new heartbeat counts them already
			r.pending[n.ID] = p
		}
		c := Candidate{Node: n, HasStream: has[n.ID], Pending: p.n}
		all = append(all, c)
		if !c.full() {
			room = append(room, c)
			if req.Region != "" && n.Region == req.Region {
				local = append(local, c)
			}
		}
	}
	if len(all) == 0 {
		return Node{}, ErrNoNode
	}
	cands := room
	switch {
	case len(local) > 0:
		cands = local
	case len(room) == 0:
		cands = all // every node is full: spread the overload
	}
	c := r.sel.Select(req, cands)
	p := r.pending[c.ID]
	p.n++
	r.pending[c.ID] = p
	for id := range r.pending { // forget nodes that left
		if !slices.ContainsFunc(nodes, func(n Node) bool { return n.ID == id }) {
			delete(r.pending, id)
		}
	}
	return c.Node, nil
}
