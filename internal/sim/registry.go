package sim

import (
	"context"
	"slices"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Op is one method of cluster.Registry: one call, one round trip to Redis
// (a command, a MULTI pipeline or a Lua script). A Beat is one round trip
// too, but it is counted as the operations it holds (a heartbeat, a
// renewal and a stream record per claim, a relay record per relay), so
// the counts by kind size the store's work whichever way nodes call it;
// the routers' reads (world.route, countRouterReads) are counted in the
// records they read, for the same reason.
type Op int

// The registry's methods, counted by Counting.
const (
	OpHeartbeat Op = iota
	OpLeave
	OpNodes
	OpNode
	OpClaim
	OpRenew
	OpRelease
	OpOwner
	OpClaims
	OpSetStreamInfo
	OpStreamInfos
	OpSetRelay
	OpDeleteRelay
	OpRelays
	OpSetPushes
	OpPushes
	OpStreams
	numOps
)

// Kind groups operations the way an operator sizes Redis for them.
type Kind int

// Kinds of registry operations.
const (
	// KindHeartbeat: Heartbeat and Leave, one a second per node.
	KindHeartbeat Kind = iota
	// KindRenewal: Renew and SetStreamInfo, one each a second per claim.
	KindRenewal
	// KindRelay: SetRelay (a relayed stream's record per node when the
	// relay starts or moves, and again once a node timeout) and
	// DeleteRelay.
	KindRelay
	// KindLookup: Nodes, Node, Owner, Relays and the listings (Streams):
	// routing viewers and choosing upstreams. The routers' reads are
	// counted in records read (a listing of the nodes, every node's).
	KindLookup
	// KindClaim: Claim, Release and restream records.
	KindClaim
	numKinds
)

// KindNames name the kinds, in order.
var KindNames = [numKinds]string{"heartbeats", "renewals", "relay records", "lookups", "claims"}

var opKind = [numOps]Kind{
	OpHeartbeat: KindHeartbeat, OpLeave: KindHeartbeat,
	OpNodes: KindLookup, OpNode: KindLookup, OpOwner: KindLookup, OpClaims: KindLookup,
	OpStreamInfos: KindLookup, OpRelays: KindLookup, OpPushes: KindLookup, OpStreams: KindLookup,
	OpClaim: KindClaim, OpRelease: KindClaim, OpSetPushes: KindClaim,
	OpRenew: KindRenewal, OpSetStreamInfo: KindRenewal,
	OpSetRelay: KindRelay, OpDeleteRelay: KindRelay,
}

// Counts are registry calls by operation.
type Counts [numOps]int64

// ByKind sums c by kind.
func (c Counts) ByKind() [numKinds]int64 {
	var k [numKinds]int64
	for op, n := range c {
		k[opKind[op]] += n
	}
	return k
}

// Counting is a cluster.Registry that counts every call by operation
// before passing it on, as metrics.InstrumentedRegistry times them. Add
// counts calls the simulation stands for without making them. It is for
// one goroutine.
type Counting struct {
	next cluster.Registry
	n    Counts
}

var _ cluster.Registry = (*Counting)(nil)

// NewCounting wraps next.
func NewCounting(next cluster.Registry) *Counting { return &Counting{next: next} }

// Counts returns the calls counted so far.
func (c *Counting) Counts() Counts { return c.n }

// Add counts n calls of op that were not made.
func (c *Counting) Add(op Op, n int64) { c.n[op] += n }

// Heartbeat implements cluster.Registry.
func (c *Counting) Heartbeat(ctx context.Context, n cluster.Node) error {
	c.n[OpHeartbeat]++
	return c.next.Heartbeat(ctx, n)
}

// Leave implements cluster.Registry.
func (c *Counting) Leave(ctx context.Context, id cluster.NodeID) error {
	c.n[OpLeave]++
	return c.next.Leave(ctx, id)
}

// Nodes implements cluster.Registry.
func (c *Counting) Nodes(ctx context.Context) ([]cluster.Node, error) {
	c.n[OpNodes]++
	return c.next.Nodes(ctx)
}

// Node implements cluster.Registry.
func (c *Counting) Node(ctx context.Context, id cluster.NodeID) (cluster.Node, error) {
	c.n[OpNode]++
	return c.next.Node(ctx, id)
}

// Claim implements cluster.Registry.
func (c *Counting) Claim(ctx context.Context, name streamname.Name, node cluster.NodeID, cred cluster.Credential) (cluster.Claim, error) {
	c.n[OpClaim]++
	return c.next.Claim(ctx, name, node, cred)
}

// Renew implements cluster.Registry.
func (c *Counting) Renew(ctx context.Context, cl cluster.Claim) error {
	c.n[OpRenew]++
	return c.next.Renew(ctx, cl)
}

// Release implements cluster.Registry.
func (c *Counting) Release(ctx context.Context, cl cluster.Claim) error {
	c.n[OpRelease]++
	return c.next.Release(ctx, cl)
}

// Owner implements cluster.Registry.
func (c *Counting) Owner(ctx context.Context, name streamname.Name) (cluster.Claim, error) {
	c.n[OpOwner]++
	return c.next.Owner(ctx, name)
}

// Claims implements cluster.Registry.
func (c *Counting) Claims(ctx context.Context) ([]cluster.Claim, error) {
	c.n[OpClaims]++
	return c.next.Claims(ctx)
}

// Beat implements cluster.Registry, counted as the operations it holds:
// one heartbeat, one renewal per claim, one stream record per claim
// renewed with a record, one relay record per relay.
func (c *Counting) Beat(ctx context.Context, b cluster.BeatRecord) ([]cluster.Claim, error) {
	lost, err := c.next.Beat(ctx, b)
	c.n[OpHeartbeat]++
	c.n[OpRenew] += int64(len(b.Claims))
	c.n[OpSetRelay] += int64(len(b.Relays))
	if err == nil {
		for _, cl := range b.Claims {
			if _, ok := b.StreamInfos[cl.Stream]; ok && !slices.Contains(lost, cl) {
				c.n[OpSetStreamInfo]++
			}
		}
	}
	return lost, err
}

// Streams implements cluster.Registry.
func (c *Counting) Streams(ctx context.Context) ([]cluster.StreamRecord, error) {
	c.n[OpStreams]++
	return c.next.Streams(ctx)
}

// Claimed implements cluster.Registry; a subscription is not counted.
func (c *Counting) Claimed(ctx context.Context) <-chan cluster.Claim {
	return c.next.Claimed(ctx)
}

// SetStreamInfo implements cluster.Registry.
func (c *Counting) SetStreamInfo(ctx context.Context, name streamname.Name, info cluster.StreamInfo) error {
	c.n[OpSetStreamInfo]++
	return c.next.SetStreamInfo(ctx, name, info)
}

// StreamInfos implements cluster.Registry.
func (c *Counting) StreamInfos(ctx context.Context) (map[streamname.Name]cluster.StreamInfo, error) {
	c.n[OpStreamInfos]++
	return c.next.StreamInfos(ctx)
}

// SetRelay implements cluster.Registry.
func (c *Counting) SetRelay(ctx context.Context, name streamname.Name, r cluster.Relay) error {
	c.n[OpSetRelay]++
	return c.next.SetRelay(ctx, name, r)
}

// DeleteRelay implements cluster.Registry.
func (c *Counting) DeleteRelay(ctx context.Context, name streamname.Name, node cluster.NodeID) error {
	c.n[OpDeleteRelay]++
	return c.next.DeleteRelay(ctx, name, node)
}

// Relays implements cluster.Registry.
func (c *Counting) Relays(ctx context.Context, name streamname.Name) ([]cluster.Relay, error) {
	c.n[OpRelays]++
	return c.next.Relays(ctx, name)
}

// SetPushes implements cluster.Registry.
func (c *Counting) SetPushes(ctx context.Context, name streamname.Name, rec []byte) error {
	c.n[OpSetPushes]++
	return c.next.SetPushes(ctx, name, rec)
}

// Pushes implements cluster.Registry.
func (c *Counting) Pushes(ctx context.Context, name streamname.Name) ([]byte, error) {
	c.n[OpPushes]++
	return c.next.Pushes(ctx, name)
}

// Close implements cluster.Registry.
func (c *Counting) Close() error { return c.next.Close() }

// splitRegistry keeps relay records in a registry of their own.
type splitRegistry struct {
	*cluster.Memory
	relays *cluster.Memory
}

func (r splitRegistry) SetRelay(ctx context.Context, name streamname.Name, rl cluster.Relay) error {
	return r.relays.SetRelay(ctx, name, rl)
}

func (r splitRegistry) DeleteRelay(ctx context.Context, name streamname.Name, node cluster.NodeID) error {
	return r.relays.DeleteRelay(ctx, name, node)
}

func (r splitRegistry) Relays(ctx context.Context, name streamname.Name) ([]cluster.Relay, error) {
	return r.relays.Relays(ctx, name)
}

// Beat writes b's relay records to the relays' registry, the rest to the
// other.
func (r splitRegistry) Beat(ctx context.Context, b cluster.BeatRecord) ([]cluster.Claim, error) {
	relays := b.Relays
	b.Relays = nil
	lost, err := r.Memory.Beat(ctx, b)
	if err != nil || len(relays) == 0 {
		return lost, err
	}
	_, err = r.relays.Beat(ctx, cluster.BeatRecord{Node: b.Node, Relays: relays})
	return lost, err
}

// Streams lists the streams with their relays from the relays' registry.
func (r splitRegistry) Streams(ctx context.Context) ([]cluster.StreamRecord, error) {
	out, err := r.Memory.Streams(ctx)
	for i := range out {
		if err != nil {
			break
		}
		out[i].Relays, err = r.relays.Relays(ctx, out[i].Claim.Stream)
	}
	return out, err
}
