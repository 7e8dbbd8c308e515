package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

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
func NewSelector(name string) (Selector, error) { return NewSeededSelector(name, nil) }

// NewSeededSelector is NewSelector with the random choices of p2c drawn
// from rnd, so a simulation repeats itself for a given seed; nil draws from
// the process's generator. A selector with its own rnd is for one goroutine.
func NewSeededSelector(name string, rnd *rand.Rand) (Selector, error) {
	switch name {
	case "least-loaded", "":
		return leastLoaded{}, nil
	case "p2c":
		return powerOfTwo{rnd: rnd}, nil
	case "affinity":
		return affinity{}, nil
	case "hash":
		return rendezvous{}, nil
	}
	return nil, fmt.Errorf("cluster: unknown balancer %q", name)
}

// Selectors are the names NewSelector knows, the default first.
var Selectors = []string{"least-loaded", "p2c", "affinity", "hash"}

// lessLoaded orders candidates by load, then egress, then ID.
func lessLoaded(a, b *Candidate) int {
	return lessLoadedScored(a, a.Score(), b, b.Score())
}

// lessLoadedScored is lessLoaded with the scores given. Scores are never
// NaN (capacity is at least 1), so they compare with < alone.
func lessLoadedScored(a *Candidate, sa float64, b *Candidate, sb float64) int {
	switch {
	case sa < sb:
		return -1
	case sa > sb:
		return 1
	}
	return cmp.Or(cmp.Compare(a.Load.EgressBPS, b.Load.EgressBPS), cmp.Compare(a.ID, b.ID))
}

// leastLoadedOf returns the index of the least loaded candidate for which
// ok holds (every one when ok is nil), or -1. Candidates are compared in
// place: a router may weigh thousands of them for every viewer.
func leastLoadedOf(cands []Candidate, ok func(*Candidate) bool) int {
	best, bestScore := -1, 0.0
	for i := range cands {
		c := &cands[i]
		if ok != nil && !ok(c) {
			continue
		}
		if s := c.Score(); best < 0 || lessLoadedScored(c, s, &cands[best], bestScore) < 0 {
			best, bestScore = i, s
		}
	}
	return best
}

// leastLoaded picks the candidate with the lowest load.
type leastLoaded struct{}

func (leastLoaded) Select(_ RouteRequest, cands []Candidate) Candidate {
	return cands[leastLoadedOf(cands, nil)]
}

// powerOfTwo picks the less loaded of two random candidates: near
// least-loaded balance without every router herding onto one node.
type powerOfTwo struct {
	rnd *rand.Rand // nil: the process's generator
}

func (p powerOfTwo) intN(n int) int {
	if p.rnd == nil {
		return rand.IntN(n)
	}
	return p.rnd.IntN(n)
}

func (p powerOfTwo) Select(req RouteRequest, cands []Candidate) Candidate {
	if len(cands) < 2 {
		return cands[0]
	}
	i := p.intN(len(cands))
	j := p.intN(len(cands) - 1)
	if j >= i {
		j++
	}
	if lessLoaded(&cands[j], &cands[i]) < 0 {
		return cands[j]
	}
	return cands[i]
}

// affinity keeps viewers of a stream on the nodes that have it already
// while they are under affinityCap, so a stream is relayed to few nodes.
type affinity struct{}

func (affinity) Select(req RouteRequest, cands []Candidate) Candidate {
	if i := leastLoadedOf(cands, func(c *Candidate) bool { return c.HasStream && c.Score() < affinityCap }); i >= 0 {
		return cands[i]
	}
	return leastLoaded{}.Select(req, cands)
}

// rendezvous hashes the stream name with each node's ID and takes the
// highest: every router agrees, and a stream stays on its node while that
// node is alive and under capacity.
type rendezvous struct{}

func (rendezvous) Select(req RouteRequest, cands []Candidate) Candidate {
	best, bestScore := 0, uint64(0)
	for i := range cands {
		// Ties of 64-bit hashes go to the first candidate.
		if s := RendezvousHash(cands[i].ID, string(req.Stream)); i == 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return cands[best]
}

// FNV-1a, 64 bits (hash/fnv), inline: RendezvousHash runs once per node
// for every viewer a hash router places, and hash/fnv's state escapes.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// RendezvousHash is node id's score for key under rendezvous (highest
// random weight) hashing: every node that ranks nodes by it for a key
// agrees on the order, and a node leaving moves only its own keys. Live
// streams (the hash selector) and on-demand assets (their owners) are
// placed by it. It is FNV-1a of id, a zero byte and key, finished by
// SplitMix64's mixer: FNV-1a alone is near-linear in its last bytes, so
// its ranking of nodes hardly changed from one key to the next and a few
// nodes took most keys.
func RendezvousHash(id NodeID, key string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * fnvPrime64
	}
	h *= fnvPrime64 // the zero byte: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * fnvPrime64
	}
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	return h ^ h>>31
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

// RouterMaxAge is how long a Router answers from what it last read of the
// registry: the live nodes, and a stream's owner and relays. Node records
// change only at heartbeats, a second apart, and the viewers a router sent
// since are counted on top (pending); reading on every request would cost
// the registry every node's record for every viewer, a million reads a
// second for a thousand nodes taking a thousand viewers a second.
const RouterMaxAge = time.Second

// routerStreams bounds the streams whose owner and relays a Router keeps.
const routerStreams = 4096

// Router answers where a viewer should play a stream: it filters the
// registry's live nodes and asks its Selector. Reads of the registry are
// kept RouterMaxAge and shared by the requests that wait for them.
type Router struct {
	reg    Registry
	sel    Selector
	maxAge time.Duration
	now    func() time.Time
	reads  singleflight.Group

	mu      sync.Mutex
	pending map[NodeID]pending
	nodes   []Node
	nodesAt time.Time
	holders map[streamname.Name]holders
}

// holders are the nodes that have a stream: its owner and its relays.
type holders struct {
	nodes []NodeID
	at    time.Time
}

type pending struct {
	seen time.Time // the heartbeat the count is on top of
	n    int
}

// NewRouter routes with sel over the nodes in reg.
func NewRouter(reg Registry, sel Selector) *Router {
	return &Router{
		reg: reg, sel: sel, maxAge: RouterMaxAge, now: time.Now,
		pending: make(map[NodeID]pending),
		holders: make(map[streamname.Name]holders),
	}
}

// liveNodes returns the registry's nodes as read at most maxAge ago
// (cached), or read now when reread or the last read is older.
func (r *Router) liveNodes(ctx context.Context, reread bool) (nodes []Node, cached bool, err error) {
	r.mu.Lock()
	nodes, fresh := r.nodes, r.nodes != nil && r.now().Sub(r.nodesAt) < r.maxAge
	r.mu.Unlock()
	if fresh && !reread {
		return nodes, true, nil
	}
	v, err, _ := r.reads.Do("nodes", func() (any, error) {
		at := r.now()
		// Shared by every request waiting: one leaving must not fail
		// the others (the registry bounds its calls itself).
		nodes, err := r.reg.Nodes(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		if nodes == nil {
			nodes = []Node{}
		}
		r.mu.Lock()
		r.nodes, r.nodesAt = nodes, at
		r.mu.Unlock()
		return nodes, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v.([]Node), false, nil
}

// streamHolders returns the nodes that have name (its owner and relays),
// as read at most maxAge ago. A failed read counts as none.
func (r *Router) streamHolders(ctx context.Context, name streamname.Name) []NodeID {
	r.mu.Lock()
	h, ok := r.holders[name]
	r.mu.Unlock()
	if ok && r.now().Sub(h.at) < r.maxAge {
		return h.nodes
	}
	v, _, _ := r.reads.Do("stream "+string(name), func() (any, error) {
		ctx := context.WithoutCancel(ctx)
		h := holders{at: r.now()}
		if c, err := r.reg.Owner(ctx, name); err == nil {
			h.nodes = append(h.nodes, c.Node)
		}
		if relays, err := r.reg.Relays(ctx, name); err == nil {
			for _, rl := range relays {
				h.nodes = append(h.nodes, rl.Node)
			}
		}
		r.mu.Lock()
		if len(r.holders) >= routerStreams {
			for n, old := range r.holders {
				if h.at.Sub(old.at) >= r.maxAge {
					delete(r.holders, n)
				}
			}
			if len(r.holders) >= routerStreams {
				clear(r.holders)
			}
		}
		r.holders[name] = h
		r.mu.Unlock()
		return h.nodes, nil
	})
	nodes, _ := v.([]NodeID)
	return nodes
}

// Route picks the node for a viewer of req.Stream. It decides on the
// nodes as last read (RouterMaxAge), and then reads the chosen node's own
// record: a node that began draining, or died, since is never chosen, at
// the cost of one record rather than every node's.
func (r *Router) Route(ctx context.Context, req RouteRequest) (Node, error) {
	n, cached, err := r.route(ctx, req, false)
	if err != nil || !cached {
		return n, err
	}
	if now, err := r.reg.Node(ctx, n.ID); err == nil && now.State == StateServing || errors.Is(err, ErrUnavailable) {
		return n, nil
	}
	// The chosen node changed since the nodes were read: take the viewer
	// back, read them all again and decide on that.
	r.mu.Lock()
	if p, ok := r.pending[n.ID]; ok && p.seen.Equal(n.Seen) && p.n > 0 {
		p.n--
		r.pending[n.ID] = p
	}
	r.mu.Unlock()
	n, _, err = r.route(ctx, req, true)
	return n, err
}

// route decides on the nodes as read (cached when from an earlier read)
// and counts the viewer in the chosen node's pending count.
func (r *Router) route(ctx context.Context, req RouteRequest, reread bool) (chosen Node, cached bool, err error) {
	nodes, cached, err := r.liveNodes(ctx, reread)
	if err != nil {
		return Node{}, false, err
	}
	has := map[NodeID]bool{}
	if _, ok := r.sel.(affinity); ok { // the one selector that asks HasStream
		for _, id := range r.streamHolders(ctx, req.Stream) {
			has[id] = true
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	all := make([]Candidate, 0, len(nodes))
	for _, n := range nodes {
		if n.State != StateServing {
			continue
		}
		p := r.pending[n.ID]
		if !p.seen.Equal(n.Seen) {
			p = pending{seen: n.Seen} // a new heartbeat counts them already
			r.pending[n.ID] = p
		}
		all = append(all, Candidate{Node: n, HasStream: has[n.ID], Pending: p.n})
	}
	c, err := Pick(r.sel, req, all)
	if err != nil {
		return Node{}, false, err
	}
	p := r.pending[c.ID]
	p.n++
	r.pending[c.ID] = p
	if !cached {
		for id := range r.pending { // forget nodes that left (nodes is sorted by ID)
			if _, ok := slices.BinarySearchFunc(nodes, id, func(n Node, id NodeID) int { return cmp.Compare(n.ID, id) }); !ok {
				delete(r.pending, id)
			}
		}
	}
	return c.Node, cached, nil
}

// Pick is a route's decision once the registry has been read: cands are the
// serving nodes, each with HasStream and Pending filled in. Full nodes are
// left out unless every node is full (the overload is then spread over
// all), nodes of req.Region come first when it has any with room, and sel
// picks among the rest. Pick reorders cands: those it offers sel come
// first, in their order. ErrNoNode when cands is empty.
func Pick(sel Selector, req RouteRequest, cands []Candidate) (Candidate, error) {
	if len(cands) == 0 {
		return Candidate{}, ErrNoNode
	}
	// Each pass moves the candidates kept to the front, in their order,
	// and moves nothing when it keeps them all: the common case copies
	// no candidate.
	room := 0
	for i := range cands {
		if !cands[i].full() {
			if i != room {
				cands[i], cands[room] = cands[room], cands[i]
			}
			room++
		}
	}
	if room == 0 {
		return sel.Select(req, cands), nil // every node is full: spread the overload
	}
	if req.Region != "" {
		local := 0
		for i := range cands[:room] {
			if cands[i].Region == req.Region {
				if i != local {
					cands[i], cands[local] = cands[local], cands[i]
				}
				local++
			}
		}
		if local > 0 {
			return sel.Select(req, cands[:local]), nil
		}
	}
	return sel.Select(req, cands[:room]), nil
}
