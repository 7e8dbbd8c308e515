package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/streamname"
)

// MemoryConfig configures a Memory registry.
type MemoryConfig struct {
	// NodeTimeout is how long a node stays alive, a claim held and a relay
	// recorded without being refreshed. Zero or negative means
	// DefaultNodeTimeout.
	NodeTimeout time.Duration
	// Clock is the registry's time. Defaults to clock.Real.
	Clock clock.Clock
}

// Memory is a Registry held in the process's memory: the registry of a
// single node, and of several in-process nodes that share one Memory in
// tests. It follows exactly the rules of the Redis registry, so code tested
// against one behaves the same against the other. It is safe for
// concurrent use. Its methods never fail for want of a store, so they never
// return ErrUnavailable.
type Memory struct {
	timeout time.Duration
	clock   clock.Clock

	mu sync.Mutex
	// Expiry times are readings of the clock's Monotonic, so a wall-clock
	// step does not revive or kill records: every now below is one.
	nodes  map[NodeID]memNode
	claims map[streamname.Name]memClaim
	// epochs is the last epoch handed out per name, kept EpochTTL past
	// the name's last claim or renewal. Like the Redis counter it only
	// grows; expiry and reset (the test double of a store that restarted
	// empty) forget it, and the name then numbers from the clock.
	epochs     map[streamname.Name]memEpoch
	claimCalls int // sweeps of expired epochs are counted in claims
	relays     map[streamname.Name]map[NodeID]memRelay
	infos      map[streamname.Name]memInfo
	// timelines are the timelines of the last stream records, kept
	// TimelineTTL past the records' last write.
	timelines map[streamname.Name]memTimeline
	// swept and infosSwept are when expired records, and expired stream
	// records, were last dropped: at most once a NodeTimeout, so a
	// registry of many nodes and streams is not scanned whole on every
	// heartbeat and every renewal.
	swept, infosSwept time.Time
	pushes            map[streamname.Name][]byte

	feed claimFeed
}

var _ Registry = (*Memory)(nil)

type memNode struct {
	node    Node
	expires time.Time
}

type memClaim struct {
	node    NodeID
	epoch   uint64
	cred    Credential
	expires time.Time
}

type memEpoch struct {
	last    uint64
	expires time.Time
}

type memInfo struct {
	info    StreamInfo
	expires time.Time
}

type memTimeline struct {
	timeline Timeline
	expires  time.Time
}

type memRelay struct {
	upstream NodeID
	expires  time.Time
}

// NewMemory returns an empty in-memory registry.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = DefaultNodeTimeout
	}
	m := &Memory{timeout: cfg.NodeTimeout, clock: clock.OrReal(cfg.Clock)}
	m.reset()
	return m
}

// reset forgets everything, epoch counters included: what a Redis store
// that restarted empty looks like to its nodes. Tests use it.
func (m *Memory) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes = make(map[NodeID]memNode)
	m.claims = make(map[streamname.Name]memClaim)
	m.epochs = make(map[streamname.Name]memEpoch)
	m.relays = make(map[streamname.Name]map[NodeID]memRelay)
	m.infos = make(map[streamname.Name]memInfo)
	m.timelines = make(map[streamname.Name]memTimeline)
	m.pushes = make(map[streamname.Name][]byte)
}

// Heartbeat implements Registry.
func (m *Memory) Heartbeat(_ context.Context, n Node) error {
	if n.ID == "" {
		return errEmptyNode("heartbeat")
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heartbeatLocked(n, now)
	return nil
}

// heartbeatLocked is Heartbeat under m.mu.
func (m *Memory) heartbeatLocked(n Node, now time.Time) {
	// Seen is the wall clock, in UTC without a monotonic reading: the same
	// value a Redis registry hands back after its JSON round trip.
	n.Seen = m.clock.Now().UTC().Round(0)
	m.nodes[n.ID] = memNode{node: n, expires: now.Add(m.timeout)}
	// Heartbeats come regularly from every node, which makes them the
	// place to drop whatever expired and is never looked at again (the
	// relays of a stream that ended, say), so memory stays bounded: at
	// most what two NodeTimeouts write.
	if !now.Before(m.swept.Add(m.timeout)) {
		m.sweepLocked(now)
		m.swept = now
	}
}

// sweepLocked deletes every expired record. Epochs stay: they must outlive
// the claims they numbered.
func (m *Memory) sweepLocked(now time.Time) {
	for id, n := range m.nodes {
		if !now.Before(n.expires) {
			delete(m.nodes, id)
		}
	}
	for name, c := range m.claims {
		if !now.Before(c.expires) {
			delete(m.claims, name)
		}
	}
	for name, rs := range m.relays {
		for id, r := range rs {
			if !now.Before(r.expires) {
				delete(rs, id)
			}
		}
		if len(rs) == 0 {
			delete(m.relays, name)
		}
	}
}

// Leave implements Registry.
func (m *Memory) Leave(_ context.Context, id NodeID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nodes, id)
	return nil
}

// Nodes implements Registry.
func (m *Memory) Nodes(context.Context) ([]Node, error) {
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	nodes := make([]Node, 0, len(m.nodes))
	for _, n := range m.nodes {
		if now.Before(n.expires) {
			nodes = append(nodes, n.node)
		}
	}
	slices.SortFunc(nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	return nodes, nil
}

// Node implements Registry.
func (m *Memory) Node(_ context.Context, id NodeID) (Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.aliveLocked(id, m.clock.Monotonic()) {
		return Node{}, fmt.Errorf("cluster: node %s: %w", id, ErrNotFound)
	}
	return m.nodes[id].node, nil
}

func (m *Memory) aliveLocked(id NodeID, now time.Time) bool {
	n, ok := m.nodes[id]
	return ok && now.Before(n.expires)
}

// currentLocked returns name's claim if its lease has not run out.
func (m *Memory) currentLocked(name streamname.Name, now time.Time) (memClaim, bool) {
	c, ok := m.claims[name]
	if !ok || !now.Before(c.expires) {
		return memClaim{}, false
	}
	return c, true
}

// Claim implements Registry.
func (m *Memory) Claim(_ context.Context, name streamname.Name, node NodeID, cred Credential) (Claim, error) {
	if node == "" {
		return Claim{}, errEmptyNode("claim " + string(name))
	}
	if len(cred) > maxCredLen {
		return Claim{}, fmt.Errorf("cluster: claim %s: credential of %d bytes", name, len(cred))
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	var from NodeID
	if cur, ok := m.currentLocked(name, now); ok && cur.node != node && m.aliveLocked(cur.node, now) {
		if cred == "" || cred != cur.cred {
			return Claim{}, fmt.Errorf("cluster: claim %s: %w: owner %s", name, ErrClaimed, cur.node)
		}
		from = cur.node // the same publisher, come back elsewhere
	}
	epoch := m.epochLocked(name, now) + 1
	if epoch == 1 {
		epoch = uint64(m.clock.Now().UnixMilli()) // the wall clock, as Redis's TIME
	}
	m.raiseEpochLocked(name, epoch, now)
	if m.claimCalls++; m.claimCalls%256 == 0 {
		m.sweepEpochsLocked(now)
	}
	m.claims[name] = memClaim{node: node, epoch: epoch, cred: cred, expires: now.Add(m.timeout)}
	c := Claim{Stream: name, Node: node, Epoch: epoch, Cred: cred, From: from}
	m.feed.publish(c)
	if t, ok := m.timelines[name]; ok && now.Before(t.expires) {
		prior := t.timeline
		c.Prior = &prior
	}
	return c, nil
}

// Renew implements Registry.
func (m *Memory) Renew(_ context.Context, c Claim) error {
	if err := checkClaim("renew", c); err != nil {
		return err
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.renewLocked(c, now) {
		return fmt.Errorf("cluster: renew %s epoch %d: %w", c.Stream, c.Epoch, ErrLost)
	}
	return nil
}

// renewLocked is Renew under m.mu: false when c is lost.
func (m *Memory) renewLocked(c Claim, now time.Time) bool {
	switch m.fenceLocked(c, now) {
	case fenceHeld:
	case fenceVacant, fenceOlder:
		// Restore the claim the registry forgot; raising the counter
		// below makes the next claim of the name number above it.
	default:
		return false
	}
	m.raiseEpochLocked(c.Stream, c.Epoch, now)
	m.claims[c.Stream] = memClaim{node: c.Node, epoch: c.Epoch, cred: c.Cred, expires: now.Add(m.timeout)}
	return true
}

// Beat implements Registry, under one hold of the lock.
func (m *Memory) Beat(_ context.Context, b BeatRecord) ([]Claim, error) {
	if err := checkBeat(b); err != nil {
		return nil, err
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heartbeatLocked(b.Node, now)
	var lost []Claim
	for _, c := range b.Claims {
		if !m.renewLocked(c, now) {
			lost = append(lost, c)
			continue
		}
		if info, ok := b.StreamInfos[c.Stream]; ok {
			m.setInfoLocked(c.Stream, info, now)
		}
	}
	for name, up := range b.Relays {
		m.setRelayLocked(name, Relay{Node: b.Node.ID, Upstream: up}, now)
	}
	return lost, nil
}

// Streams implements Registry.
func (m *Memory) Streams(context.Context) ([]StreamRecord, error) {
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]StreamRecord, 0, len(m.claims))
	for name, c := range m.claims {
		if !now.Before(c.expires) {
			continue
		}
		rec := StreamRecord{Claim: Claim{Stream: name, Node: c.node, Epoch: c.epoch, Cred: c.cred}, Relays: m.relaysLocked(name, now)}
		if i, ok := m.infos[name]; ok && now.Before(i.expires) {
			info := i.info
			rec.Info = &info
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b StreamRecord) int { return cmp.Compare(a.Claim.Stream, b.Claim.Stream) })
	return out, nil
}

// checkBeat refuses a BeatRecord no node could send: one without a node,
// a claim or a record that is not the node's, or one Renew or
// SetStreamInfo would refuse.
func checkBeat(b BeatRecord) error {
	id := b.Node.ID
	if id == "" {
		return errEmptyNode("beat")
	}
	for _, c := range b.Claims {
		if err := checkClaim("beat: renew", c); err != nil {
			return err
		}
		if c.Node != id {
			return fmt.Errorf("cluster: beat of %s: claim of %s is node %s's", id, c.Stream, c.Node)
		}
		if len(c.Cred) > maxCredLen || strings.ContainsAny(string(c.Cred), "| ") {
			return fmt.Errorf("cluster: beat of %s: claim of %s: bad credential", id, c.Stream)
		}
	}
	for name, info := range b.StreamInfos {
		if err := checkInfo(name, info); err != nil {
			return err
		}
		if info.Node != id {
			return fmt.Errorf("cluster: beat of %s: record of %s is node %s's", id, name, info.Node)
		}
	}
	for name, up := range b.Relays {
		if up == "" {
			return fmt.Errorf("cluster: beat of %s: relay of %s without an upstream", id, name)
		}
	}
	return nil
}

// epochLocked returns the last epoch handed out for name, or 0 when the
// registry remembers none.
func (m *Memory) epochLocked(name streamname.Name, now time.Time) uint64 {
	e, ok := m.epochs[name]
	if !ok || !now.Before(e.expires) {
		return 0
	}
	return e.last
}

// raiseEpochLocked makes name's counter at least epoch, remembered for
// EpochTTL from now.
func (m *Memory) raiseEpochLocked(name streamname.Name, epoch uint64, now time.Time) {
	m.epochs[name] = memEpoch{last: max(m.epochLocked(name, now), epoch), expires: now.Add(EpochTTL)}
}

// sweepEpochsLocked forgets expired epoch counters.
func (m *Memory) sweepEpochsLocked(now time.Time) {
	for name, e := range m.epochs {
		if !now.Before(e.expires) {
			delete(m.epochs, name)
		}
	}
}

// Release implements Registry.
func (m *Memory) Release(_ context.Context, c Claim) error {
	if err := checkClaim("release", c); err != nil {
		return err
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.fenceLocked(c, now) {
	case fenceHeld:
		delete(m.claims, c.Stream)
		return nil
	case fenceVacant, fenceOlder:
		// The lease ran out, or the store lost the claim: nothing of c's
		// is left to release.
		return nil
	default:
		return fmt.Errorf("cluster: release %s epoch %d: %w", c.Stream, c.Epoch, ErrLost)
	}
}

// fence is where a claim stands against the registry's current state.
type fence int

const (
	// fenceHeld: the claim is the current one.
	fenceHeld fence = iota
	// fenceVacant: no claim is current and no epoch above the claim's was
	// handed out, so the claim is still the newest the registry knows of.
	fenceVacant
	// fenceOlder: a claim of a lower epoch is current, which only happens
	// when the store lost the claim and an older or a newly numbered one
	// took its place: the highest epoch wins.
	fenceOlder
	// fenceLost: a newer claim exists or existed.
	fenceLost
)

func (m *Memory) fenceLocked(c Claim, now time.Time) fence {
	cur, ok := m.currentLocked(c.Stream, now)
	switch {
	case ok && cur.node == c.Node && cur.epoch == c.Epoch:
		return fenceHeld
	case !ok && m.epochLocked(c.Stream, now) <= c.Epoch:
		return fenceVacant
	case ok && cur.epoch < c.Epoch:
		return fenceOlder
	default:
		return fenceLost
	}
}

// Owner implements Registry.
func (m *Memory) Owner(_ context.Context, name streamname.Name) (Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.currentLocked(name, m.clock.Monotonic())
	if !ok {
		return Claim{}, fmt.Errorf("cluster: owner of %s: %w", name, ErrNotFound)
	}
	return Claim{Stream: name, Node: cur.node, Epoch: cur.epoch, Cred: cur.cred}, nil
}

// Claims implements Registry.
func (m *Memory) Claims(context.Context) ([]Claim, error) {
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	claims := make([]Claim, 0, len(m.claims))
	for name, c := range m.claims {
		if now.Before(c.expires) {
			claims = append(claims, Claim{Stream: name, Node: c.node, Epoch: c.epoch, Cred: c.cred})
		}
	}
	slices.SortFunc(claims, func(a, b Claim) int { return cmp.Compare(a.Stream, b.Stream) })
	return claims, nil
}

// SetRelay implements Registry.
func (m *Memory) SetRelay(_ context.Context, name streamname.Name, r Relay) error {
	if r.Node == "" {
		return errEmptyNode("set relay of " + string(name))
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setRelayLocked(name, r, now)
	return nil
}

// setRelayLocked is SetRelay under m.mu.
func (m *Memory) setRelayLocked(name streamname.Name, r Relay, now time.Time) {
	rs := m.relays[name]
	if rs == nil {
		rs = make(map[NodeID]memRelay)
		m.relays[name] = rs
	}
	rs[r.Node] = memRelay{upstream: r.Upstream, expires: now.Add(RelayLife * m.timeout)}
}

// DeleteRelay implements Registry.
func (m *Memory) DeleteRelay(_ context.Context, name streamname.Name, node NodeID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rs := m.relays[name]; rs != nil {
		delete(rs, node)
		if len(rs) == 0 {
			delete(m.relays, name)
		}
	}
	return nil
}

// Relays implements Registry.
func (m *Memory) Relays(_ context.Context, name streamname.Name) ([]Relay, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.relaysLocked(name, m.clock.Monotonic()), nil
}

// relaysLocked is Relays under m.mu.
func (m *Memory) relaysLocked(name streamname.Name, now time.Time) []Relay {
	rs := m.relays[name]
	relays := make([]Relay, 0, len(rs))
	for id, r := range rs {
		if n, ok := m.nodes[id]; ok && now.Before(n.expires) && now.Before(r.expires) {
			relays = append(relays, Relay{Node: id, Upstream: r.upstream})
		}
	}
	slices.SortFunc(relays, func(a, b Relay) int { return cmp.Compare(a.Node, b.Node) })
	return relays
}

// Close implements Registry. A Memory holds no connections; its records
// stay readable after Close.
func (m *Memory) Close() error { return nil }

// SetStreamInfo implements Registry.
func (m *Memory) SetStreamInfo(_ context.Context, name streamname.Name, info StreamInfo) error {
	if err := checkInfo(name, info); err != nil {
		return err
	}
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setInfoLocked(name, info, now)
	return nil
}

// setInfoLocked is SetStreamInfo under m.mu.
func (m *Memory) setInfoLocked(name streamname.Name, info StreamInfo, now time.Time) {
	if !now.Before(m.infosSwept.Add(m.timeout)) { // drop the expired as new ones come
		for n, i := range m.infos {
			if !now.Before(i.expires) {
				delete(m.infos, n)
			}
		}
		for n, t := range m.timelines {
			if !now.Before(t.expires) {
				delete(m.timelines, n)
			}
		}
		m.infosSwept = now
	}
	if info.Timeline != nil {
		t := *info.Timeline // the caller's is not kept
		info.Timeline = &t
		m.timelines[name] = memTimeline{timeline: t, expires: now.Add(TimelineTTL)}
	}
	m.infos[name] = memInfo{info: info, expires: now.Add(m.timeout)}
}

// StreamInfos implements Registry.
func (m *Memory) StreamInfos(context.Context) (map[streamname.Name]StreamInfo, error) {
	now := m.clock.Monotonic()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[streamname.Name]StreamInfo, len(m.infos))
	for name, i := range m.infos {
		if now.Before(i.expires) {
			out[name] = i.info
		}
	}
	return out, nil
}

// checkInfo refuses a stream record without a node, or too big.
func checkInfo(name streamname.Name, info StreamInfo) error {
	if info.Node == "" {
		return errEmptyNode("set info of " + string(name))
	}
	if len(info.Info) > maxStreamInfo {
		return fmt.Errorf("cluster: set info of %s: %d bytes, at most %d", name, len(info.Info), maxStreamInfo)
	}
	return nil
}

// Claimed implements Registry.
func (m *Memory) Claimed(ctx context.Context) <-chan Claim { return m.feed.subscribe(ctx, nil) }

// errEmptyNode refuses a record without a node ID: it would name nobody,
// and in Redis it would collide with the prefix's own keys.
func errEmptyNode(op string) error {
	return fmt.Errorf("cluster: %s: empty node id", op)
}

// checkClaim refuses a claim no registry could have handed out: epochs
// start at 1, and a claim names its node.
func checkClaim(op string, c Claim) error {
	if c.Node == "" {
		return errEmptyNode(op + " " + string(c.Stream))
	}
	if c.Epoch == 0 {
		return fmt.Errorf("cluster: %s %s epoch 0: %w", op, c.Stream, ErrLost)
	}
	return nil
}
