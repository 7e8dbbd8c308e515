package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Tiers.
const (
	tierOrigin = iota
	tierMid
	tierEdge
)

var tierNames = [...]string{"origin", "mid", "edge"}

// node is a simulated meshcast node.
type node struct {
	id      cluster.NodeID
	idx     int32
	region  int
	tier    int
	edge    bool // takes viewers
	parents []cluster.NodeID
	alive   bool
	// draining: it heartbeats as cluster.StateDraining and takes no new
	// work (routers and relays choose other nodes) until it leaves.
	draining bool

	feeds  map[int32]*feed // its copy of each stream it has
	relays []*feed         // the feeds it pulls, in the order opened
	owned  []int32         // streams published here (some since moved)

	viewers  []int32 // viewers placed here (some since moved)
	nviewers int

	connected int     // relays with an upstream, whose records are written again once a cluster.RelayRefresh
	refreshes float64 // those rewrites due but not yet counted (a fraction of one)
	dirty     []*feed // relays whose record must be written at the next beat

	// The router's view: the heartbeat its record was last seen with,
	// and the viewers routed to it since (cluster.Router's pending).
	seen    time.Time
	pending int
}

// feed is one node's copy of one stream: published there (owned), or
// relayed from the feed up on another node.
type feed struct {
	n       *node
	s       int32
	owned   bool
	up      *feed   // nil while reconnecting, or owned
	down    []*feed // feeds pulling from this one
	viewers int32
	via     []cluster.NodeID
	direct  bool // an upstream answered 508: the owner only
	backoff time.Duration
	lastUp  time.Duration // when it last had an upstream
	retry   uint32        // generation of the pending retry
	idle    uint32        // generation of the pending idle check
	idleAt  time.Duration // when it lost its last reader; -1: it has some
	ended   bool
	wroteUp cluster.NodeID // the upstream its relay record names; "" none
	expire  uint32         // generation of the pending record expiry
}

// stream is a published stream.
type stream struct {
	name  streamname.Name
	home  int   // the publisher's region
	owner *feed // nil while its publisher reconnects
	claim cluster.Claim
	cred  string
	away  bool // counted in world.ownerless
}

// viewer is a player of one stream.
type viewer struct {
	s      int32
	region uint8
	node   int32 // -1: not placed
	lost   bool  // counted in world.unplaced
}

// Events.
type evKind uint8

const (
	evTick evKind = iota
	evArrival
	evViewer
	evRelay
	evIdle
	evPublisher
	evSteady // the arrivals are over: the steady phase, then the failures
	evDrain  // a node begins draining
	evLeave  // a draining node's grace is over: it leaves
	evKill
	evRegion
	evMark
	evExpire       // a dead node's relay records expire
	evRecordExpire // a relay without upstream: its record expires
)

type event struct {
	at   time.Duration
	seq  uint64
	kind evKind
	a    int32
	gen  uint32
	f    *feed
	list []int32 // evExpire: the streams whose records expire
}

// world is one run.
type world struct {
	cfg  Config
	sel  cluster.Selector
	rnd  *rand.Rand
	clk  *clock.Fake
	t0   time.Time
	mem  *cluster.Memory
	rmem *cluster.Memory // relay records
	reg  *Counting
	ctx  context.Context
	now  time.Duration
	tick int64
	// routes since the last heartbeat round, for the routers' reads
	routes int64
	nodes  []*node
	byID   map[cluster.NodeID]*node

	regions   []string
	regionIdx map[string]int
	streams   []stream
	holders   [][]*feed // per stream, the feeds of it
	viewers   []viewer
	cdf       []float64

	events []event
	seq    uint64
	nev    int64

	// The router's candidates, per region, rebuilt at each heartbeat
	// round; fallback is all of them, built when a region has no room.
	cands      [][]cluster.Candidate
	fallback   []cluster.Candidate
	fallbackOK bool

	arrived int

	// Recovery: viewers not placed, relays without an upstream, streams
	// without an owner.
	unplaced, reconnecting, ownerless int

	phase      *Phase
	phaseStart time.Duration
	orphanAt   time.Duration // the last orphaned viewer placed
	restoredAt time.Duration
	failed     int64

	markAt     [2]time.Duration
	markCounts [2]Counts
	markNodes  int

	// leaving are the drain phase's nodes that have not left yet;
	// draining, how many of them drain now.
	leaving  []*node
	draining int
	// broken counts work given to a node that takes none (checkPlaced,
	// checkAttached), reported at the phase's end; checked counts the
	// placements and pulls checked while some node drained.
	broken struct {
		placed, attached           int
		firstPlaced, firstAttached string
		checked                    int64
	}

	res Result
}

// layout builds the nodes of c: per region, origins (2 %), mid-tier nodes
// (10 %, with 3 tiers) and edges; with 1 tier every node is an origin
// and an edge.
func layout(c Config) []*node {
	var nodes []*node
	for r := range c.Regions {
		n := c.Nodes / c.Regions
		if r < c.Nodes%c.Regions {
			n++
		}
		origins, mids := n, 0
		switch c.Tiers {
		case 2:
			origins = max(1, int(math.Round(0.02*float64(n))))
		case 3:
			origins = max(1, int(math.Round(0.02*float64(n))))
			mids = max(1, int(math.Round(0.1*float64(n))))
		}
		origins = min(origins, n-mids-min(1, c.Tiers-1))
		var midIDs []cluster.NodeID
		for i := range n {
			nd := &node{region: r, tier: tierEdge, edge: true}
			switch {
			case i < origins:
				nd.tier, nd.edge = tierOrigin, c.Tiers == 1
			case i < origins+mids:
				nd.tier, nd.edge = tierMid, false
			}
			nd.id = cluster.NodeID(fmt.Sprintf("r%d-%s-%04d", r, tierNames[nd.tier], i))
			if nd.tier == tierMid {
				midIDs = append(midIDs, nd.id)
			}
			if nd.tier == tierEdge && len(midIDs) > 0 {
				// Two parents of the region (--parent A,B): the first live
				// one is pulled through.
				j := i - origins - mids
				nd.parents = []cluster.NodeID{midIDs[j%len(midIDs)]}
				if len(midIDs) > 1 {
					nd.parents = append(nd.parents, midIDs[(j+1)%len(midIDs)])
				}
			}
			nodes = append(nodes, nd)
		}
	}
	for i, n := range nodes {
		n.idx = int32(i)
	}
	return nodes
}

// Run simulates c.
func Run(ctx context.Context, c Config) (Result, error) {
	w, err := newWorld(c)
	if err != nil {
		return Result{}, err
	}
	defer w.close()
	return w.run(ctx)
}

// newWorld builds the world of c, ready to run.
func newWorld(c Config) (*world, error) {
	c = c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rnd := rand.New(rand.NewPCG(c.Seed, c.Seed^0x6d65736863617374))
	sel, err := cluster.NewSeededSelector(c.Balance, rand.New(rand.NewPCG(c.Seed+1, 7)))
	if err != nil {
		return nil, err
	}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	mem := cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: nodeTimeout, Clock: clk})
	// Relay records live in a registry of their own whose leases outlast
	// the run: the simulation removes each where the node timeout would
	// (evExpire, evRecordExpire), so refreshing them every second, which
	// changes nothing else, is counted without being done.
	rmem := cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: 1000 * time.Hour, Clock: clk})
	w := &world{
		cfg: c, sel: sel, rnd: rnd, clk: clk, t0: t0, mem: mem, rmem: rmem,
		reg: NewCounting(splitRegistry{Memory: mem, relays: rmem}),
		ctx: context.Background(), byID: map[cluster.NodeID]*node{}, regionIdx: map[string]int{},
	}
	w.res.Config = c
	w.build()
	return w, nil
}

// run runs w to its end.
func (w *world) run(ctx context.Context) (Result, error) {
	if err := w.loop(ctx); err != nil {
		return Result{}, err
	}
	w.res.Events = w.nev
	w.res.SimTime = w.now
	w.opsReport()
	return w.res, nil
}

// close closes w's registries.
func (w *world) close() {
	w.mem.Close()
	w.rmem.Close()
}

func (w *world) build() {
	c := w.cfg
	w.nodes = layout(c)
	for r := range c.Regions {
		name := "r" + strconv.Itoa(r)
		w.regions = append(w.regions, name)
		w.regionIdx[name] = r
	}
	edges := 0
	for _, n := range w.nodes {
		n.alive = true
		n.feeds = map[int32]*feed{}
		w.byID[n.id] = n
		// A relay record counts while its node lives: the relays'
		// registry knows every node, for good (the simulation removes a
		// dead node's relays itself, and ChooseUpstream checks the node
		// in the registry proper).
		w.rmem.Heartbeat(w.ctx, cluster.Node{ID: n.id, State: cluster.StateServing})
		switch {
		case n.tier == tierOrigin:
			w.res.OriginNodes++
		case n.tier == tierMid:
			w.res.MidNodes++
		}
		if n.edge {
			edges++
		}
	}
	w.res.EdgeNodes = edges
	if w.cfg.Capacity == 0 {
		w.cfg.Capacity = max(1, (2*c.Viewers+edges-1)/max(edges, 1))
	}
	w.res.Capacity = w.cfg.Capacity

	// Zipf popularity: stream i is watched in proportion to (i+1)^-s.
	w.cdf = make([]float64, c.Streams)
	sum := 0.0
	for i := range w.cdf {
		sum += math.Pow(float64(i+1), -c.Zipf)
		w.cdf[i] = sum
	}
	for i := range w.cdf {
		w.cdf[i] /= sum
	}
	w.streams = make([]stream, c.Streams)
	w.holders = make([][]*feed, c.Streams)
	for i := range w.streams {
		w.streams[i] = stream{
			name: StreamName(i),
			home: w.rnd.IntN(c.Regions),
			cred: "publisher-key-" + strconv.Itoa(i),
		}
	}
	w.viewers = make([]viewer, 0, c.Viewers)
	w.cands = make([][]cluster.Candidate, c.Regions)

	// Nodes join, publishers publish, viewers start arriving.
	w.heartbeats()
	for s := range w.streams {
		w.publish(int32(s))
	}
	w.schedule(event{at: heartbeatEvery, kind: evTick})
	if c.Viewers > 0 {
		w.schedule(event{at: 0, kind: evArrival})
	}
	w.markAt = [2]time.Duration{max(0, c.Arrival-time.Minute), c.Arrival}
	w.schedule(event{at: w.markAt[0], kind: evMark, a: 0})
	w.schedule(event{at: w.markAt[1], kind: evMark, a: 1})
	w.schedule(event{at: c.Arrival + settle, kind: evSteady})
}

// StreamName is the name of the scenario's stream i.
func StreamName(i int) streamname.Name { return streamname.Name(fmt.Sprintf("live/s%07d", i)) }

// estimate is the simulated time a run is expected to take, for progress.
func (w *world) estimate() time.Duration {
	d := w.cfg.Arrival + settle + 2*(nodeTimeout+relayIdle+15*time.Second)
	if w.cfg.Drain > 0 {
		d += 2*w.cfg.DrainGrace + nodeTimeout + relayIdle + 15*time.Second
	}
	return d
}

// loop runs events until the last phase ends.
func (w *world) loop(ctx context.Context) error {
	for len(w.events) > 0 {
		ev := w.pop()
		if ev.at > w.now {
			w.now = ev.at
			w.clk.Set(w.t0.Add(w.now))
		}
		w.nev++
		switch ev.kind {
		case evTick:
			if err := ctx.Err(); err != nil {
				return err
			}
			if !w.onTick() {
				return nil
			}
		case evArrival:
			w.arrive()
		case evViewer:
			w.place(ev.a)
		case evRelay:
			if ev.gen == ev.f.retry {
				w.retryRelay(ev.f)
			}
		case evIdle:
			if f := ev.f; ev.gen == f.idle && !f.ended && f.idleAt >= 0 && w.now-f.idleAt >= relayIdle {
				w.endFeed(f, false)
			}
		case evPublisher:
			w.publish(ev.a)
		case evSteady:
			w.startPhase("steady", 0)
			if w.cfg.Drain > 0 {
				w.drain()
			} else {
				w.kill()
			}
		case evDrain:
			w.startDraining(w.nodes[ev.a])
		case evLeave:
			w.leave(w.nodes[ev.a])
		case evKill:
			w.kill()
		case evRegion:
			w.loseRegion()
		case evExpire:
			for _, s := range ev.list {
				w.rmem.DeleteRelay(w.ctx, w.streams[s].name, w.nodes[ev.a].id)
			}
		case evRecordExpire:
			if f := ev.f; ev.gen == f.expire && !f.ended && f.up == nil && f.n.alive && f.wroteUp != "" {
				w.rmem.DeleteRelay(w.ctx, w.streams[f.s].name, f.n.id)
				f.wroteUp = ""
			}
		case evMark:
			w.markCounts[ev.a] = w.reg.Counts()
			if ev.a == 1 {
				w.markNodes = w.liveNodes()
			}
		}
		if w.phase != nil && w.restoredAt < 0 && w.unplaced == 0 && w.reconnecting == 0 && w.ownerless == 0 {
			w.restoredAt = w.now
		}
	}
	return nil
}

// Events.

func (w *world) schedule(ev event) {
	w.seq++
	ev.seq = w.seq
	w.events = append(w.events, ev)
	// sift up
	h := w.events
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !evLess(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func evLess(a, b *event) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

func (w *world) pop() event {
	h := w.events
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = event{}
	h = h[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h) && evLess(&h[l], &h[m]) {
			m = l
		}
		if r < len(h) && evLess(&h[r], &h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	w.events = h
	return top
}

// The heartbeat round.

// onTick runs a heartbeat round; false ends the run.
func (w *world) onTick() bool {
	w.tick++
	w.heartbeats()
	if w.cfg.Progress != nil {
		w.cfg.Progress(min(1, float64(w.now)/float64(w.estimate())))
	}
	if w.phase != nil && w.phaseOver() {
		return w.endPhase()
	}
	w.schedule(event{at: w.now + heartbeatEvery, kind: evTick})
	return true
}

// heartbeats does what every live node's Member does each second:
// heartbeat with its load, renew its claims with their stream records,
// refresh its relays' records. Then the router reads the nodes.
func (w *world) heartbeats() {
	for _, n := range w.nodes {
		if !n.alive {
			continue
		}
		w.reg.Heartbeat(w.ctx, w.record(n))
		for _, s := range n.owned {
			st := &w.streams[s]
			if st.owner == nil || st.owner.n != n {
				continue
			}
			if err := w.reg.Renew(w.ctx, st.claim); err == nil {
				w.reg.SetStreamInfo(w.ctx, st.name, cluster.StreamInfo{Node: n.id, Info: streamInfo})
			}
		}
		// A relay's record is written when the relay is new or moved
		// (those are written here) and again once a RelayRefresh (those
		// are counted, at their rate, as the member does them).
		written := 0
		for _, f := range n.dirty {
			if !f.ended && f.up != nil && f.wroteUp != f.up.n.id {
				w.reg.SetRelay(w.ctx, w.streams[f.s].name, cluster.Relay{Node: n.id, Upstream: f.up.n.id})
				f.wroteUp = f.up.n.id
				written++
			}
		}
		n.dirty = n.dirty[:0]
		n.refreshes += float64(n.connected-written) * float64(heartbeatEvery) / float64(cluster.RelayRefresh(nodeTimeout))
		due := int64(n.refreshes)
		n.refreshes -= float64(due)
		w.reg.Add(OpSetRelay, due)
		n.owned = slices.DeleteFunc(n.owned, func(s int32) bool {
			o := w.streams[s].owner
			return o == nil || o.n != n
		})
	}
	w.snapshotCandidates()
}

// record is n's heartbeat: a draining node's says so (Member.beat).
func (w *world) record(n *node) cluster.Node {
	capacity := 0
	if n.edge {
		capacity = w.cfg.Capacity
	}
	state := cluster.StateServing
	if n.draining {
		state = cluster.StateDraining
	}
	return cluster.Node{
		ID: n.id, Region: w.regions[n.region], HTTPAddr: string(n.id) + ":8080",
		Capacity: capacity, State: state,
		Load: cluster.Load{Viewers: n.nviewers, Streams: len(n.feeds)},
	}
}

// streamInfo is the record an owner writes with each renewal.
var streamInfo = []byte(`{"video":"H264","audio":"AAC","width":1280,"height":720}`)

// countRouterReads counts the node records the cluster's routers read in
// the round that ended: a router (cluster.Router) reads every node's record
// at most once a cluster.RouterMaxAge, when it routes a viewer. Route
// requests reach the edges evenly (through a balancer), so of E live edges
// E·(1−e^(−R/E)) routed at least one of the round's R viewers.
func (w *world) countRouterReads(nodes int) {
	if w.routes == 0 {
		return
	}
	edges := 0
	for r := range w.cands {
		edges += len(w.cands[r])
	}
	if edges == 0 {
		edges = 1
	}
	rounds := float64(heartbeatEvery) / float64(cluster.RouterMaxAge)
	routers := float64(edges) * (1 - math.Exp(-float64(w.routes)/float64(edges)))
	w.reg.Add(OpNodes, int64(math.Round(routers*max(rounds, 1)*float64(nodes))))
	w.routes = 0
}

// snapshotCandidates reads the live nodes as a router does, keeping each
// node's pending count until its next heartbeat shows (cluster.Router).
func (w *world) snapshotCandidates() {
	nodes, _ := w.reg.next.Nodes(w.ctx) // the routers' reads are counted below
	w.countRouterReads(len(nodes))
	for r := range w.cands {
		w.cands[r] = w.cands[r][:0]
	}
	w.fallbackOK = false
	for _, rec := range nodes {
		n := w.byID[rec.ID]
		if n == nil || !n.edge || rec.State != cluster.StateServing {
			continue
		}
		if !n.seen.Equal(rec.Seen) {
			n.seen, n.pending = rec.Seen, 0
		}
		r := w.regionIdx[rec.Region]
		w.cands[r] = append(w.cands[r], cluster.Candidate{Node: rec, Pending: n.pending})
	}
}

// Viewers.

func (w *world) arrive() {
	c := w.cfg
	s := int32(sort.SearchFloat64s(w.cdf, w.rnd.Float64()))
	s = min(s, int32(c.Streams-1))
	w.viewers = append(w.viewers, viewer{s: s, region: uint8(w.rnd.IntN(c.Regions)), node: -1})
	w.arrived++
	w.place(int32(len(w.viewers) - 1))
	if w.arrived < c.Viewers {
		at := time.Duration(float64(c.Arrival) * float64(w.arrived) / float64(c.Viewers))
		w.schedule(event{at: at, kind: evArrival})
	}
}

// route is cluster.Router.Route on the round's snapshot: the viewer's
// region's nodes first, all nodes when none of those has room (which is
// what Pick does with all of them, at a fraction of the work).
func (w *world) route(v *viewer) (c cluster.Candidate, from []cluster.Candidate, fallback, ok bool) {
	// A router decides on the nodes it read at most a RouterMaxAge ago
	// (counted once a round, countRouterReads) and reads the chosen
	// node's record; with affinity, the stream's owner and relays too
	// (counted in pick). The simulation reads the nodes once a round.
	w.routes++
	w.reg.Add(OpNode, 1)
	req := cluster.RouteRequest{Stream: w.streams[v.s].name, Region: w.regions[v.region]}
	cands := w.cands[v.region]
	if c, ok := w.pick(req, v.s, cands); ok && c.Score() < 1 {
		return c, cands, false, true
	}
	if !w.fallbackOK {
		w.fallback = w.fallback[:0]
		for _, rc := range w.cands {
			w.fallback = append(w.fallback, rc...)
		}
		w.fallbackOK = true
	}
	c, ok = w.pick(req, v.s, w.fallback)
	return c, w.fallback, true, ok
}

func (w *world) pick(req cluster.RouteRequest, s int32, cands []cluster.Candidate) (cluster.Candidate, bool) {
	if len(cands) == 0 {
		return cluster.Candidate{}, false
	}
	if w.cfg.Balance == "affinity" {
		holders := int64(0)
		for i := range cands {
			f := w.byID[cands[i].ID].feeds[s]
			cands[i].HasStream = f != nil
			if f != nil {
				holders++
			}
		}
		w.reg.Add(OpOwner, 1)
		w.reg.Add(OpRelays, holders)
	}
	c, err := cluster.Pick(w.sel, req, cands)
	return c, err == nil
}

// place routes viewer v and connects it, or schedules its retry.
func (w *world) place(vi int32) {
	v := &w.viewers[vi]
	if v.node >= 0 {
		return
	}
	c, from, fallback, ok := w.route(v)
	if ok {
		n := w.byID[c.ID]
		n.pending++
		for i := range from {
			if from[i].ID == c.ID {
				from[i].Pending = n.pending
				break
			}
		}
		if fallback {
			rc := w.cands[n.region]
			for i := range rc {
				if rc[i].ID == c.ID {
					rc[i].Pending = n.pending
					break
				}
			}
		} else {
			w.fallbackOK = false
		}
		if n.alive {
			if f, err := w.ensureFeed(n, v.s, nil); err == nil {
				w.checkPlaced(vi, n)
				f.viewers++
				f.idleAt = -1
				v.node = n.idx
				n.viewers = append(n.viewers, vi)
				n.nviewers++
				if v.lost {
					v.lost = false
					w.unplaced--
					w.orphanAt = w.now
				}
				return
			}
		}
	}
	// Refused: the node is dead (its record not yet expired), or the
	// stream has no owner; the player tries again.
	w.failed++
	if !v.lost {
		v.lost = true
		w.unplaced++
	}
	w.schedule(event{at: w.now + playerRetry + time.Duration(w.rnd.Int64N(int64(playerJitter))), kind: evViewer, a: vi})
}

// Relays.

// ensureFeed gives n a copy of stream s, as a viewer's or a pull's
// request does (hub.NewReader, Relays.Pull): the one it has, or a relay
// from the upstream cluster.ChooseUpstream picks. It fails when the
// stream has no owner.
func (w *world) ensureFeed(n *node, s int32, via []cluster.NodeID) (*feed, error) {
	if f := n.feeds[s]; f != nil {
		return f, nil
	}
	up, err := cluster.ChooseUpstream(w.ctx, w.reg, w.streams[s].name, w.query(n, via, false))
	if err != nil {
		return nil, err
	}
	f := &feed{n: n, s: s, via: via, backoff: firstBackoff, lastUp: w.now, idleAt: -1}
	n.feeds[s] = f
	n.relays = append(n.relays, f)
	w.holders[s] = append(w.holders[s], f)
	w.reconnecting++
	w.connect(f, up.ID)
	return f, nil
}

func (w *world) query(n *node, via []cluster.NodeID, direct bool) cluster.UpstreamQuery {
	return cluster.UpstreamQuery{
		Self: n.id, Region: w.regions[n.region], Parents: n.parents, Mesh: w.cfg.Mesh,
		Via: via, Direct: direct,
	}
}

// connect pulls f from node id, as Relays.pullFrom does.
func (w *world) connect(f *feed, id cluster.NodeID) {
	u := w.byID[id]
	switch {
	case u == nil || !u.alive:
		w.retryLater(f) // connection refused
	case u == f.n || slices.Contains(f.via, id):
		f.direct = true // 508 Loop Detected: the owner only from now on
		w.retryLater(f)
	default:
		g, err := w.ensureFeed(u, f.s, append(slices.Clip(f.via), f.n.id))
		if err != nil {
			w.retryLater(f) // the upstream could not find the stream
			return
		}
		w.attach(f, g)
	}
}

// attach makes g f's upstream.
func (w *world) attach(f, g *feed) {
	w.checkAttached(f, g)
	f.up = g
	g.down = append(g.down, f)
	g.idleAt = -1
	f.backoff, f.lastUp = firstBackoff, w.now
	f.n.connected++
	f.n.dirty = append(f.n.dirty, f)
	w.reconnecting--
}

// lostUp is f losing its upstream: its record is no longer refreshed and
// expires after the node timeout unless it finds another.
func (w *world) lostUp(f *feed) {
	f.up = nil
	f.lastUp = w.now // packets came until now
	f.n.connected--
	f.expire++
	w.schedule(event{at: w.now + nodeTimeout, kind: evRecordExpire, f: f, gen: f.expire})
}

// retryLater schedules f's next look for an upstream after its backoff.
func (w *world) retryLater(f *feed) {
	f.retry++
	w.schedule(event{at: w.now + f.backoff, kind: evRelay, f: f, gen: f.retry})
	f.backoff = min(2*f.backoff, maxBackoff)
}

// retryRelay is a relay without an upstream looking again (Relays.run).
func (w *world) retryRelay(f *feed) {
	if f.ended || f.up != nil || f.owned {
		return
	}
	if w.now-f.lastUp > relayIdle {
		w.endFeed(f, true) // no node has had the stream: the relay ends
		return
	}
	up, err := cluster.ChooseUpstream(w.ctx, w.reg, w.streams[f.s].name, w.query(f.n, f.via, f.direct))
	if err != nil {
		w.retryLater(f)
		return
	}
	w.connect(f, up.ID)
}

// unlink takes f off its upstream's readers.
func (w *world) unlink(f *feed) {
	if g := f.up; g != nil {
		g.down = slices.DeleteFunc(g.down, func(x *feed) bool { return x == f })
		w.lostUp(f)
		w.maybeIdle(g)
	}
}

// maybeIdle starts f's idle countdown when it has no readers left.
func (w *world) maybeIdle(f *feed) {
	if f.ended || f.owned || f.viewers > 0 || len(f.down) > 0 || f.idleAt >= 0 {
		return
	}
	f.idleAt = w.now
	f.idle++
	w.schedule(event{at: w.now + relayIdle, kind: evIdle, f: f, gen: f.idle})
}

// endFeed ends f: its relay record goes, and pullers of it look for the
// stream again. With orphan (the stream ended for it), its viewers and
// pullers' viewers are refused and reconnect.
func (w *world) endFeed(f *feed, orphan bool) {
	if f.ended {
		return
	}
	f.ended = true
	n := f.n
	if f.up != nil {
		w.unlink(f)
	} else if !f.owned {
		w.reconnecting--
	}
	if !f.owned {
		n.relays = slices.DeleteFunc(n.relays, func(x *feed) bool { return x == f })
		if n.alive {
			w.reg.DeleteRelay(w.ctx, w.streams[f.s].name, n.id)
		}
	}
	delete(n.feeds, f.s)
	w.holders[f.s] = slices.DeleteFunc(w.holders[f.s], func(x *feed) bool { return x == f })
	down := f.down
	f.down = nil
	for _, g := range down {
		w.lostUp(g)
		if orphan {
			w.reconnecting++
			w.endFeed(g, true)
			continue
		}
		w.reconnecting++
		g.backoff = firstBackoff
		w.retryLater(g)
	}
	if orphan && f.viewers > 0 {
		for _, vi := range n.viewers {
			if v := &w.viewers[vi]; v.node == n.idx && v.s == f.s {
				w.orphan(vi)
				n.nviewers--
			}
		}
	}
}

// orphan disconnects viewer vi; its player reconnects.
func (w *world) orphan(vi int32) {
	v := &w.viewers[vi]
	v.node = -1
	if !v.lost {
		v.lost = true
		w.unplaced++
	}
	w.schedule(event{at: w.now + playerRetry + time.Duration(w.rnd.Int64N(int64(playerJitter))), kind: evViewer, a: vi})
}

// Publishers.

// publish (re)connects stream s's publisher to an origin of its region
// (any region's when its own has none alive) and claims the stream with
// its credentials, which takes it over from a dead owner at once. A
// draining origin takes no publisher (its /readyz answers 503).
func (w *world) publish(s int32) {
	st := &w.streams[s]
	if st.owner != nil {
		return
	}
	var origins []*node
	for _, region := range []int{st.home, -1} {
		for _, n := range w.nodes {
			if n.takesWork() && n.tier == tierOrigin && (region < 0 || n.region == region) {
				origins = append(origins, n)
			}
		}
		if len(origins) > 0 {
			break
		}
	}
	if len(origins) == 0 {
		w.schedule(event{at: w.now + publisherRetry, kind: evPublisher, a: s})
		return
	}
	n := origins[w.rnd.IntN(len(origins))]
	c, err := w.reg.Claim(w.ctx, st.name, n.id, cluster.CredentialOf("cluster-secret", st.cred))
	if err != nil {
		w.schedule(event{at: w.now + publisherRetry, kind: evPublisher, a: s})
		return
	}
	c.From = ""
	st.claim = c
	if f := n.feeds[s]; f != nil {
		// A local publisher takes over the stream this node relays.
		if f.up != nil {
			w.unlink(f)
		} else {
			w.reconnecting--
		}
		f.owned, f.idleAt = true, -1
		f.retry++
		n.relays = slices.DeleteFunc(n.relays, func(x *feed) bool { return x == f })
		w.reg.DeleteRelay(w.ctx, st.name, n.id)
		st.owner = f
	} else {
		f := &feed{n: n, s: s, owned: true, idleAt: -1}
		n.feeds[s] = f
		w.holders[s] = append(w.holders[s], f)
		st.owner = f
	}
	n.owned = append(n.owned, s)
	if st.away {
		st.away = false
		w.ownerless--
	}
	// Relays waiting for the stream wake on the claim (Relays.watchClaims).
	for _, f := range w.holders[s] {
		if !f.owned && f.up == nil && !f.ended {
			f.backoff = 0
			w.retryLater(f)
			f.backoff = firstBackoff
		}
	}
}

// Failures.

// killNode crashes n (dropNode).
func (w *world) killNode(n *node) {
	w.phase.Killed++
	w.dropNode(n, false)
}

// dropNode takes n out of the cluster: its viewers reconnect, its pullers
// look for the stream again, its publishers reconnect elsewhere. A crash
// tells the registry nothing: it forgets n, and n's relay records, after
// the node timeout (the claims are taken over by their publishers'
// credentials). A planned departure (leave) is App.Close: n's relays end
// and delete their records, and Member.Close releases its claims and
// leaves the registry, all at once.
func (w *world) dropNode(n *node, planned bool) {
	if !planned {
		n.alive = false
	}
	for _, vi := range n.viewers {
		if w.viewers[vi].node == n.idx {
			w.orphan(vi)
			w.phase.Orphaned++
		}
	}
	n.viewers, n.nviewers = nil, 0
	feeds := n.relays
	n.relays = nil // ending each, below, need not search it
	if !planned {
		var records []int32
		for _, f := range feeds {
			if f.wroteUp != "" {
				records = append(records, f.s)
			}
		}
		w.schedule(event{at: w.now + nodeTimeout, kind: evExpire, a: n.idx, list: records})
	}
	for _, s := range n.owned {
		if o := w.streams[s].owner; o != nil && o.n == n {
			feeds = append(feeds, o)
		}
	}
	for _, f := range feeds {
		f.viewers = 0
		if f.owned {
			st := &w.streams[f.s]
			if planned {
				w.reg.Release(w.ctx, st.claim)
			}
			st.owner, st.away = nil, true
			w.ownerless++
			w.schedule(event{at: w.now + publisherRetry, kind: evPublisher, a: f.s})
		}
		w.endFeed(f, false) // a live node's relay deletes its record
	}
	n.relays, n.owned, n.dirty = nil, nil, nil
	if planned {
		w.reg.Leave(w.ctx, n.id)
		n.alive, n.draining = false, false
	}
}

// liveList returns the live nodes, in order.
func (w *world) liveList() []*node {
	live := make([]*node, 0, len(w.nodes))
	for _, n := range w.nodes {
		if n.alive {
			live = append(live, n)
		}
	}
	return live
}

// drain starts the drain phase: a share of the nodes drain as a rolling
// restart does, one after another, evenly over one drain grace, and each
// leaves a grace after it began. The first leave while the last still
// drain: their viewers and pullers must find nodes that do not.
func (w *world) drain() {
	k := int(math.Round(w.cfg.Drain * float64(len(w.nodes))))
	w.startPhase("drain", k)
	live := w.liveList()
	k = min(max(k, 0), len(live))
	for j, i := range w.rnd.Perm(len(live))[:k] {
		n := live[i]
		w.leaving = append(w.leaving, n)
		at := w.now + time.Duration(j)*w.cfg.DrainGrace/time.Duration(k)
		w.schedule(event{at: at, kind: evDrain, a: n.idx})
		w.schedule(event{at: at + w.cfg.DrainGrace, kind: evLeave, a: n.idx})
	}
	w.phase.Drained = k
}

// startDraining is SIGTERM on n (App.Drain): Member.Drain beats at once,
// as cluster.StateDraining, and n serves what it serves until it leaves.
func (w *world) startDraining(n *node) {
	n.draining = true
	w.draining++
	w.reg.Heartbeat(w.ctx, w.record(n))
	// A router that chooses n reads its record, finds it draining, and
	// decides again on a fresh read of the nodes (cluster.Router.Route):
	// no viewer is routed to n from now on. The simulation takes n out
	// of the round's candidates, as that read would; later rounds leave
	// it out (it is not serving).
	rc := w.cands[n.region]
	w.cands[n.region] = slices.DeleteFunc(rc, func(c cluster.Candidate) bool { return c.ID == n.id })
	w.fallbackOK = false
}

// leave is n's departure at the end of its grace (dropNode); the phase's
// recovery is timed from the last departure.
func (w *world) leave(n *node) {
	w.phaseStart = w.now
	w.orphanAt, w.restoredAt = -1, -1
	w.draining--
	w.dropNode(n, true)
	w.leaving = slices.DeleteFunc(w.leaving, func(x *node) bool { return x == n })
}

// kill crashes Kill of the cluster's nodes, chosen among the live ones.
func (w *world) kill() {
	k := int(math.Round(w.cfg.Kill * float64(len(w.nodes))))
	w.startPhase("kill", k)
	live := w.liveList()
	perm := w.rnd.Perm(len(live))
	for _, i := range perm[:min(max(k, 0), len(live))] {
		w.killNode(live[i])
	}
}

func (w *world) loseRegion() {
	w.startPhase("region", 0)
	for _, n := range w.nodes {
		if n.region == 0 && n.alive {
			w.killNode(n)
		}
	}
}

// Phases.

func (w *world) startPhase(name string, _ int) {
	w.phase = &Phase{Name: name, At: w.now, Replaced: -1, Restored: -1}
	w.phaseStart = w.now
	w.orphanAt, w.restoredAt = -1, -1
	w.failed = 0
	if name == "steady" {
		w.phase.Replaced, w.phase.Restored = 0, 0
		w.finishPhase()
	}
}

// phaseOver: the cluster recovered, dead nodes' records expired, and idle
// relays had the time to close; or the phase's bound passed.
func (w *world) phaseOver() bool {
	if len(w.leaving) > 0 {
		return false // nodes drain yet
	}
	if w.now-w.phaseStart >= phaseCap {
		return true
	}
	return w.restoredAt >= 0 && w.now >= max(w.restoredAt, w.phaseStart+nodeTimeout)+relayIdle+2*time.Second
}

// endPhase reports the phase and starts the next; false when none is left.
func (w *world) endPhase() bool {
	if w.restoredAt >= 0 {
		w.phase.Restored = w.restoredAt - w.phaseStart
		w.phase.Replaced = 0
		if w.orphanAt >= 0 {
			w.phase.Replaced = w.orphanAt - w.phaseStart
		}
	} else {
		w.res.Violations = append(w.res.Violations, fmt.Sprintf("%s: not recovered within %v", w.phase.Name, phaseCap))
	}
	name := w.phase.Name
	w.finishPhase()
	next := evKill
	switch {
	case name == "drain":
	case name == "kill" && !w.cfg.NoRegionLoss && w.cfg.Regions > 1:
		next = evRegion
	default:
		return false
	}
	w.schedule(event{at: w.now, kind: next})
	w.schedule(event{at: w.now + heartbeatEvery, kind: evTick})
	return true
}

func (w *world) finishPhase() {
	p := w.phase
	p.FailedAttempts = w.failed
	p.Snapshot = w.snapshot()
	w.res.Phases = append(w.res.Phases, *p)
	w.checkInvariants(p)
	if p.Name == "steady" {
		w.phase = nil
	}
}

func (w *world) liveNodes() int {
	n := 0
	for _, nd := range w.nodes {
		if nd.alive {
			n++
		}
	}
	return n
}

// snapshot measures the placement now.
func (w *world) snapshot() Snapshot {
	var s Snapshot
	s.LiveNodes = w.liveNodes()
	for _, v := range w.viewers {
		if v.node >= 0 {
			s.Placed++
		}
	}
	s.Unplaced = w.cfg.Viewers - s.Placed
	edges := 0
	for _, n := range w.nodes {
		if !n.alive {
			continue
		}
		if n.edge {
			edges++
			s.LoadMax = max(s.LoadMax, n.nviewers)
			s.LoadMean += float64(n.nviewers)
		}
		for _, f := range n.relays {
			if f.up != nil {
				s.Pulls++
			}
		}
	}
	if edges > 0 {
		s.LoadMean /= float64(edges)
	}
	ups := map[*feed]int{}
	relays := make([]int, len(w.holders))
	for i, hs := range w.holders {
		for _, f := range hs {
			if !f.owned {
				relays[i]++
			}
			for _, g := range f.down {
				ups[g]++
			}
			if f.n.tier == tierOrigin {
				s.OriginEgress += len(f.down)
			}
		}
	}
	for _, k := range ups {
		s.MaxUpstreams = max(s.MaxUpstreams, k)
	}
	slices.Sort(relays)
	sum := 0
	for _, r := range relays {
		sum += r
	}
	s.RelaysMean = float64(sum) / float64(len(relays))
	s.RelaysP99 = relays[min(len(relays)-1, int(math.Ceil(0.99*float64(len(relays))))-1)]
	s.RelaysMax = relays[len(relays)-1]
	return s
}

// takesWork reports whether n may be given new work: viewers, pulls.
func (n *node) takesWork() bool { return n.alive && !n.draining }

// state names what n is for a violation's message.
func (n *node) state() string {
	switch {
	case !n.alive:
		return "dead"
	case n.draining:
		return "draining"
	}
	return "serving"
}

// checkPlaced notes viewer vi placed on n, which must take new work; the
// phase's end reports it (checkInvariants). O(1): it runs for every
// placement.
func (w *world) checkPlaced(vi int32, n *node) {
	if w.draining > 0 {
		w.broken.checked++
	}
	if n.takesWork() {
		return
	}
	if w.broken.placed++; w.broken.placed == 1 {
		w.broken.firstPlaced = fmt.Sprintf("viewer %d on %s node %s at %v", vi, n.state(), n.id, w.now)
	}
}

// checkAttached notes f starting to pull from g, whose node must take new
// work, but for the stream's owner: cluster.ChooseUpstream skips a
// draining parent or peer but falls back on the owner whatever its state,
// the one node with the stream until its publisher moves (when the node
// leaves). O(1): it runs for every pull.
func (w *world) checkAttached(f, g *feed) {
	if w.draining > 0 {
		w.broken.checked++
	}
	if g.n.takesWork() || g.n.alive && g.owned {
		return
	}
	if w.broken.attached++; w.broken.attached == 1 {
		w.broken.firstAttached = fmt.Sprintf("relay of %s on %s from %s node %s at %v", w.streams[f.s].name, f.n.id, g.n.state(), g.n.id, w.now)
	}
}

// checkInvariants records what p's end shows broken, and what broke on
// the way (checkPlaced, checkAttached). By a phase's end every draining
// node has left: none holds a viewer or feeds a relay.
func (w *world) checkInvariants(p *Phase) {
	bad := func(format string, args ...any) {
		w.res.Violations = append(w.res.Violations, p.Name+": "+fmt.Sprintf(format, args...))
	}
	if b := &w.broken; b.placed > 0 {
		bad("%d viewers placed on a node taking no new work, the first %s", b.placed, b.firstPlaced)
	}
	if b := &w.broken; b.attached > 0 {
		bad("%d relays attached to a node taking no new work, the first %s", b.attached, b.firstAttached)
	}
	w.broken.placed, w.broken.attached = 0, 0
	if p.MaxUpstreams > 1 {
		bad("a node has %d upstreams for one stream", p.MaxUpstreams)
	}
	if p.Unplaced > 0 {
		bad("%d viewers not placed", p.Unplaced)
	}
	for i, v := range w.viewers {
		if v.node < 0 {
			continue
		}
		n := w.nodes[v.node]
		if !n.takesWork() {
			bad("viewer %d on %s node %s", i, n.state(), n.id)
			break
		}
		if f := n.feeds[v.s]; f == nil {
			bad("viewer %d on %s, which lacks its stream", i, n.id)
			break
		}
	}
	mids := 0
	for _, n := range w.nodes {
		if n.alive && n.tier == tierMid {
			for _, f := range n.relays {
				if f.up != nil && f.up.n.tier == tierOrigin {
					mids++
					break
				}
			}
		}
	}
	if w.cfg.Tiers == 3 && p.OriginEgress > w.cfg.Streams*max(mids, 1) {
		bad("origin egress %d above %d streams × %d mid-tier nodes pulling", p.OriginEgress, w.cfg.Streams, mids)
	}
	// Every relay's upstream is live, not draining, and lists it.
	for _, n := range w.nodes {
		for _, f := range n.relays {
			switch {
			case f.up == nil:
			case !f.up.n.takesWork():
				bad("relay of %s on %s pulls from %s node %s", w.streams[f.s].name, n.id, f.up.n.state(), f.up.n.id)
				return
			case f.up.ended || !slices.Contains(f.up.down, f):
				bad("relay of %s on %s has a broken upstream link", w.streams[f.s].name, n.id)
				return
			}
		}
	}
}

// opsReport turns the counts at the marks into rates.
func (w *world) opsReport() {
	win := w.markAt[1] - w.markAt[0]
	if win <= 0 {
		return
	}
	var d Counts
	for i := range d {
		d[i] = w.markCounts[1][i] - w.markCounts[0][i]
	}
	o := Ops{Window: win}
	for k, n := range d.ByKind() {
		r := float64(n) / win.Seconds()
		o.ByKind = append(o.ByKind, KindRate{Kind: KindNames[k], Rate: r})
		o.Total += r
	}
	o.PerNode = o.Total / float64(max(w.markNodes, 1))
	// The routers' reads of the node list grow with the nodes squared
	// (each router reads every node), the rest linearly: at x times the
	// nodes (and viewers), L·x + Q·x² operations.
	q := float64(d[OpNodes]) / win.Seconds()
	l := o.Total - q
	if x := 0.0; o.Total > 0 {
		if q > 0 {
			x = (-l + math.Sqrt(l*l+4*q*RedisOpsPerSecond)) / (2 * q)
		} else {
			x = RedisOpsPerSecond / l
		}
		o.MaxNodes = int(x * float64(max(w.markNodes, 1)))
	}
	w.res.Ops = o
}
