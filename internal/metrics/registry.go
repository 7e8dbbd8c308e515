package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Registry operations: the op label of the registry series, one per method
// of cluster.Registry that asks the store (Close does not).
const (
	OpHeartbeat   = "heartbeat"
	OpLeave       = "leave"
	OpNodes       = "nodes"
	OpNode        = "node"
	OpClaim       = "claim"
	OpRenew       = "renew"
	OpRelease     = "release"
	OpOwner       = "owner"
	OpClaims      = "claims"
	OpSetRelay    = "set_relay"
	OpDeleteRelay = "delete_relay"
	OpRelays      = "relays"
	// OpBeat is a node's whole heartbeat: its record, claims, stream
	// records and relay records, in one call.
	OpBeat = "beat"
	// OpStreams is the cluster's stream listing.
	OpStreams = "streams"
)

// registryOps are every op, in the order of opIndex.
var registryOps = [...]string{
	OpHeartbeat, OpLeave, OpNodes, OpNode, OpClaim, OpRenew, OpRelease,
	OpOwner, OpClaims, OpSetRelay, OpDeleteRelay, OpRelays, OpBeat, OpStreams,
}

type opIndex int

const (
	opHeartbeat opIndex = iota
	opLeave
	opNodes
	opNode
	opClaim
	opRenew
	opRelease
	opOwner
	opClaims
	opSetRelay
	opDeleteRelay
	opRelays
	opBeat
	opStreams
)

// registryBuckets span a registry call from an in-memory answer (µs) to
// a store at its operation timeout (1 s to 3 s, cluster.DefaultOpTimeout).
var registryBuckets = []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// IsFailure reports whether err, returned by a cluster.Registry, is a
// failure of the registry rather than an answer. ErrClaimed (another node
// owns the stream), ErrLost (a newer claim exists) and ErrNotFound (no such
// node or owner) are answers the cluster acts on in normal operation and
// do not count; everything else does. In practice that is ErrUnavailable:
// the store cannot be reached, timed out or answered with an error, which
// is what meshcast_registry_errors_total is for.
func IsFailure(err error) bool {
	return err != nil &&
		!errors.Is(err, cluster.ErrClaimed) &&
		!errors.Is(err, cluster.ErrLost) &&
		!errors.Is(err, cluster.ErrNotFound)
}

// InstrumentedRegistry is a cluster.Registry that times every call to the
// registry it wraps (meshcast_registry_request_duration_seconds{op}) and
// counts its failures (meshcast_registry_errors_total{op}; see IsFailure).
type InstrumentedRegistry struct {
	next cluster.Registry
	ops  [len(registryOps)]opMetrics
}

type opMetrics struct {
	errors   prometheus.Counter
	duration prometheus.Observer
}

var _ cluster.Registry = (*InstrumentedRegistry)(nil)

// InstrumentRegistry wraps next, registering its series with r (nil: none).
// Every op's series exist from the start, at zero.
func InstrumentRegistry(next cluster.Registry, r prometheus.Registerer) *InstrumentedRegistry {
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshcast_registry_errors_total",
		Help: "Cluster registry calls that failed (the store unreachable, timed out or in error), by operation; a refused claim or a lost lease is an answer, not an error.",
	}, []string{"op"})
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meshcast_registry_request_duration_seconds",
		Help:    "Duration of cluster registry calls, by operation, failed ones included.",
		Buckets: registryBuckets,
	}, []string{"op"})
	if r != nil {
		r.MustRegister(errs, dur)
	}
	ir := &InstrumentedRegistry{next: next}
	for i, op := range registryOps {
		ir.ops[i] = opMetrics{errors: errs.WithLabelValues(op), duration: dur.WithLabelValues(op)}
	}
	return ir
}

// Unwrap returns the wrapped registry.
func (r *InstrumentedRegistry) Unwrap() cluster.Registry { return r.next }

// done records one call of op that started at start and returned err.
func (r *InstrumentedRegistry) done(op opIndex, start time.Time, err error) {
	m := &r.ops[op]
	m.duration.Observe(time.Since(start).Seconds())
	if IsFailure(err) {
		m.errors.Inc()
	}
}

// Heartbeat implements cluster.Registry.
func (r *InstrumentedRegistry) Heartbeat(ctx context.Context, n cluster.Node) error {
	start := time.Now()
	err := r.next.Heartbeat(ctx, n)
	r.done(opHeartbeat, start, err)
	return err
}

// Leave implements cluster.Registry.
func (r *InstrumentedRegistry) Leave(ctx context.Context, id cluster.NodeID) error {
	start := time.Now()
	err := r.next.Leave(ctx, id)
	r.done(opLeave, start, err)
	return err
}

// Nodes implements cluster.Registry.
func (r *InstrumentedRegistry) Nodes(ctx context.Context) ([]cluster.Node, error) {
	start := time.Now()
	nodes, err := r.next.Nodes(ctx)
	r.done(opNodes, start, err)
	return nodes, err
}

// Node implements cluster.Registry.
func (r *InstrumentedRegistry) Node(ctx context.Context, id cluster.NodeID) (cluster.Node, error) {
	start := time.Now()
	n, err := r.next.Node(ctx, id)
	r.done(opNode, start, err)
	return n, err
}

// Claim implements cluster.Registry.
func (r *InstrumentedRegistry) Claim(ctx context.Context, name streamname.Name, node cluster.NodeID, cred cluster.Credential) (cluster.Claim, error) {
	start := time.Now()
	c, err := r.next.Claim(ctx, name, node, cred)
	r.done(opClaim, start, err)
	return c, err
}

// Renew implements cluster.Registry.
func (r *InstrumentedRegistry) Renew(ctx context.Context, c cluster.Claim) error {
	start := time.Now()
	err := r.next.Renew(ctx, c)
	r.done(opRenew, start, err)
	return err
}

// Release implements cluster.Registry.
func (r *InstrumentedRegistry) Release(ctx context.Context, c cluster.Claim) error {
	start := time.Now()
	err := r.next.Release(ctx, c)
	r.done(opRelease, start, err)
	return err
}

// Owner implements cluster.Registry.
func (r *InstrumentedRegistry) Owner(ctx context.Context, name streamname.Name) (cluster.Claim, error) {
	start := time.Now()
	c, err := r.next.Owner(ctx, name)
	r.done(opOwner, start, err)
	return c, err
}

// Claims implements cluster.Registry.
func (r *InstrumentedRegistry) Claims(ctx context.Context) ([]cluster.Claim, error) {
	start := time.Now()
	cs, err := r.next.Claims(ctx)
	r.done(opClaims, start, err)
	return cs, err
}

// SetRelay implements cluster.Registry.
func (r *InstrumentedRegistry) SetRelay(ctx context.Context, name streamname.Name, rl cluster.Relay) error {
	start := time.Now()
	err := r.next.SetRelay(ctx, name, rl)
	r.done(opSetRelay, start, err)
	return err
}

// DeleteRelay implements cluster.Registry.
func (r *InstrumentedRegistry) DeleteRelay(ctx context.Context, name streamname.Name, node cluster.NodeID) error {
	start := time.Now()
	err := r.next.DeleteRelay(ctx, name, node)
	r.done(opDeleteRelay, start, err)
	return err
}

// Relays implements cluster.Registry.
func (r *InstrumentedRegistry) Relays(ctx context.Context, name streamname.Name) ([]cluster.Relay, error) {
	start := time.Now()
	rs, err := r.next.Relays(ctx, name)
	r.done(opRelays, start, err)
	return rs, err
}

// Beat implements cluster.Registry.
func (r *InstrumentedRegistry) Beat(ctx context.Context, b cluster.BeatRecord) ([]cluster.Claim, error) {
	start := time.Now()
	lost, err := r.next.Beat(ctx, b)
	r.done(opBeat, start, err)
	return lost, err
}

// Streams implements cluster.Registry.
func (r *InstrumentedRegistry) Streams(ctx context.Context) ([]cluster.StreamRecord, error) {
	start := time.Now()
	s, err := r.next.Streams(ctx)
	r.done(opStreams, start, err)
	return s, err
}

// Close implements cluster.Registry: it closes the wrapped registry, and
// is neither timed nor counted.
func (r *InstrumentedRegistry) Close() error { return r.next.Close() }

// SetStreamInfo implements cluster.Registry.
func (r *InstrumentedRegistry) SetStreamInfo(ctx context.Context, name streamname.Name, info cluster.StreamInfo) error {
	return r.next.SetStreamInfo(ctx, name, info)
}

// StreamInfos implements cluster.Registry.
func (r *InstrumentedRegistry) StreamInfos(ctx context.Context) (map[streamname.Name]cluster.StreamInfo, error) {
	return r.next.StreamInfos(ctx)
}

// SetPushes implements cluster.Registry.
func (r *InstrumentedRegistry) SetPushes(ctx context.Context, name streamname.Name, rec []byte) error {
	return r.next.SetPushes(ctx, name, rec)
}

// Pushes implements cluster.Registry.
func (r *InstrumentedRegistry) Pushes(ctx context.Context, name streamname.Name) ([]byte, error) {
	return r.next.Pushes(ctx, name)
}

// Claimed implements cluster.Registry; it is not timed: it is a feed, not
// a call.
func (r *InstrumentedRegistry) Claimed(ctx context.Context) <-chan cluster.Claim {
	return r.next.Claimed(ctx)
}
