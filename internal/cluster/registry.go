// Package cluster lets meshcast nodes cooperate: a Registry says which nodes
// are alive and which node owns each stream; relays pull a stream from its
// owner once per node, however many viewers that node has.
//
// Ownership rests on epochs, not on locks: a node claims a stream with a
// lease and receives an epoch that only ever grows for that name (a fencing
// token). Renewal, release and takeover are compare-and-set on the epoch, so
// a node that lost its claim (it stalled, or the registry lost its data) is
// told so and can never overwrite a newer owner.
package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/meshcast/meshcast/internal/streamname"
)

// NodeID names a node in the cluster. It is stable across restarts of the
// same node (--node-id).
type NodeID string

// NodeState is what a node is doing.
type NodeState string

// Node states.
const (
	// StateServing takes publishers and viewers.
	StateServing NodeState = "serving"
	// StateDraining takes no new work and is about to leave.
	StateDraining NodeState = "draining"
)

// Load is a node's live load, sent with every heartbeat.
type Load struct {
	Viewers   int     `json:"viewers"`
	Streams   int     `json:"streams"`
	EgressBPS int64   `json:"egress_bps"`
	CPU       float64 `json:"cpu"` // fraction of the node's cores in use, 0..1
}

// Node is a node's registry record.
type Node struct {
	ID     NodeID `json:"id"`
	Region string `json:"region,omitempty"`
	// RTMPAddr and HTTPAddr are host:port that peers and clients reach the
	// node at (the advertised host with the listen ports).
	RTMPAddr string    `json:"rtmp_addr"`
	HTTPAddr string    `json:"http_addr"`
	Capacity int       `json:"capacity"` // viewers the node takes at most
	State    NodeState `json:"state"`
	Load     Load      `json:"load"`
	Started  time.Time `json:"started"`
	// Version is the node's build (buildinfo.String).
	Version string `json:"version,omitempty"`
	// StreamViewers are the node's viewers of each stream by protocol,
	// for its busiest streams (at most --metrics-max-streams), other
	// nodes' relays not counted.
	StreamViewers map[streamname.Name]map[string]int `json:"stream_viewers,omitempty"`
	// Seen is when the registry last heard the node's heartbeat. Set by
	// the registry.
	Seen time.Time `json:"seen"`
}

// Claim is a node's ownership of a stream.
type Claim struct {
	Stream streamname.Name `json:"stream"`
	Node   NodeID          `json:"node"`
	// Epoch grows with every new claim of the name, whichever node makes
	// it: the newest owner always holds the highest epoch.
	Epoch uint64 `json:"epoch"`
	// Cred is the publisher's credential the claim was made with, empty
	// for none: another node presenting it takes the claim over at once.
	Cred Credential `json:"-"`
	// From is the node a takeover moved the claim from, in Claim's answer
	// and in Claimed events; empty otherwise.
	From NodeID `json:"-"`
	// Prior is, in Claim's answer, the timeline of the stream's last
	// record (StreamInfo.Timeline) when the registry still keeps it
	// (TimelineTTL), whichever node wrote it: the new owner continues
	// it. nil when there is none.
	Prior *Timeline `json:"-"`
}

// Credential is a publisher's credentials as a claim keeps them: an HMAC
// under the cluster secret (CredentialOf), never the credentials or a bare
// digest of them, so the registry's store cannot be mined for them.
type Credential string

// CredentialOf returns the Credential of presented (a publisher's
// credential digest, as auth grants it) under the cluster secret; empty
// when nothing was presented.
func CredentialOf(secret, presented string) Credential {
	if presented == "" {
		return ""
	}
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("meshcast claim credential\n" + presented))
	return Credential(hex.EncodeToString(h.Sum(nil)))
}

// maxCredLen bounds a Credential a registry takes (a hex SHA-256 is 64).
const maxCredLen = 128

// StreamInfo is what a stream's owner says of it in the registry with each
// renewal: Info is the owner's JSON description (codecs, size, bitrate),
// kept as it came, and Timeline where the stream's timestamps stand.
type StreamInfo struct {
	Node     NodeID          `json:"node"`
	Info     json.RawMessage `json:"info"`
	Timeline *Timeline       `json:"timeline,omitempty"`
}

// Timeline is where a stream's timestamps stood on its owner: DTS, the
// newest (ms), was appended at At, the owner's wall clock in Unix
// milliseconds. The next owner of the stream, which may never have had it,
// starts its timestamps at DTS plus the time since At (Claim.Prior), so
// relays and HLS numbering on every node go on across the move. Nodes'
// clocks are assumed to agree within clock.MaxSkew; the new owner bounds
// the time since At to [1 ms, 30 s] (stream.ResumeWindow), so a skew
// shifts the continued timeline by no more than that.
type Timeline struct {
	DTS int64 `json:"dts"`
	At  int64 `json:"at"`
}

// TimelineTTL is how long a registry keeps the timeline of a stream's last
// record after it was written, past the record, its claim and its owner:
// a publisher that comes back to another node within it continues the
// stream's timeline there.
const TimelineTTL = time.Minute

// maxStreamInfo bounds a StreamInfo's Info.
const maxStreamInfo = 16 << 10

// RelayLife is how many node timeouts a relay record lives unless written
// again. A relay record counts only while its node is alive, so it needs
// no renewal to go away with a dead node: members write a relay's record
// when it starts or changes upstream and then once a node timeout
// (RelayRefresh), not on every heartbeat. Relay records are most of what a
// large cluster writes to its registry (one per relayed stream per node),
// so this divides the registry's load by about the heartbeats in a node
// timeout.
const RelayLife = 3

// RelayRefresh is how often a member writes a relay's record again while
// the relay goes on unchanged: once a node timeout.
func RelayRefresh(timeout time.Duration) time.Duration { return timeout }

// Relay records that a node relays a stream, and from which node it pulls.
type Relay struct {
	Node     NodeID `json:"node"`
	Upstream NodeID `json:"upstream"`
}

// BeatRecord is what a node refreshes in the registry with every
// heartbeat: its own record, the claims it holds, its records of the
// streams it owns and the streams it relays. Beat writes it whole, in one
// call to the store, however many streams it names.
type BeatRecord struct {
	// Node is the node's record, as Heartbeat takes it.
	Node Node
	// Claims are the node's claims, each renewed as Renew does. Each
	// must be Node's.
	Claims []Claim
	// StreamInfos are the node's records of the streams it owns, by
	// name, as SetStreamInfo takes them. A record is written only when
	// the node's claim of its name is in Claims and is renewed: a node
	// never describes a stream it no longer owns.
	StreamInfos map[streamname.Name]StreamInfo
	// Relays are the streams the node relays, each with the node it pulls
	// it from, as SetRelay records them.
	Relays map[streamname.Name]NodeID
}

// StreamRecord is one claimed stream as the registry lists it: its
// current claim, its owner's record of it, and the nodes that relay it.
type StreamRecord struct {
	Claim Claim
	// Info is the owner's record, nil when none is current. It may have
	// been written by a former owner: compare Info.Node with Claim.Node.
	Info *StreamInfo
	// Relays are the current relays of the stream, sorted by node.
	Relays []Relay
}

// Epochs are unique while the store keeps its counters. A name's first
// epoch, and its first after the counter expired (EpochTTL) or the store
// lost it (Redis without persistence, restarted), is the store's clock in
// milliseconds; each claim after that adds one. Owners re-assert what a
// store lost with Renew.

// Errors callers branch on.
var (
	// ErrClaimed refuses a claim: another live node owns the stream.
	ErrClaimed = errors.New("stream is owned by another node")
	// ErrLost answers a renewal or release by a node that no longer owns
	// the stream at that epoch: a newer owner exists.
	ErrLost = errors.New("stream ownership lost to a newer claim")
	// ErrNotFound answers a look-up of a node or an owner that is not there.
	ErrNotFound = errors.New("not found in the registry")
	// ErrUnavailable wraps failures of the registry's store: it cannot be
	// reached, timed out, or answered with an error of its own.
	ErrUnavailable = errors.New("registry unavailable")
)

// Registry is the cluster's shared state. Every method returns promptly:
// implementations bound each call to the store with a timeout, and wrap a
// store that cannot be reached in ErrUnavailable. Nothing on the media path
// calls a Registry.
type Registry interface {
	// Heartbeat registers n or refreshes its record; n is alive until
	// NodeTimeout passes without another heartbeat.
	Heartbeat(ctx context.Context, n Node) error
	// Leave removes n's record at once (a clean shutdown).
	Leave(ctx context.Context, id NodeID) error
	// Nodes returns the live nodes, sorted by ID.
	Nodes(ctx context.Context) ([]Node, error)
	// Node returns one live node, or ErrNotFound.
	Node(ctx context.Context, id NodeID) (Node, error)

	// Claim makes node the owner of name with a new, higher epoch. It
	// succeeds when the name has no owner, when its owner's lease has run
	// out, when its owner is no longer alive, when node already owns it
	// (a publisher that came back to the same node), or when cred is not
	// empty and is the current claim's (the publisher came back to
	// another node: a takeover, which fences the old owner; the answer's
	// From names it); otherwise ErrClaimed. The claim lasts one lease (the
	// registry's NodeTimeout) unless renewed, and keeps cred. The answer's
	// Prior is the stream's last timeline, read in the same step.
	Claim(ctx context.Context, name streamname.Name, node NodeID, cred Credential) (Claim, error)
	// Renew extends c's lease. When the registry has lost c (its store
	// restarted empty, or the lease ran out while the store was away),
	// Renew restores it at c's epoch if no higher epoch has been handed out
	// for the name, even over a current claim of a lower epoch, which only
	// such a loss allows: the highest epoch always wins. ErrLost when a
	// higher epoch exists.
	Renew(ctx context.Context, c Claim) error
	// Release ends c if it is still the current claim (compare-and-set on
	// node and epoch); releasing a claim already superseded is ErrLost.
	Release(ctx context.Context, c Claim) error
	// Owner returns the current claim of name whose lease has not run out,
	// or ErrNotFound.
	Owner(ctx context.Context, name streamname.Name) (Claim, error)
	// Claims returns every current claim, sorted by stream name.
	Claims(ctx context.Context) ([]Claim, error)
	// Beat refreshes b in one call to the store (one round trip to
	// Redis), all or nothing: the heartbeat, the renewal of each claim,
	// the records of the streams whose claims were renewed, and the relay
	// records. It returns the claims that a newer claim superseded, which
	// Renew would have refused with ErrLost; every other claim of b was
	// renewed or restored. On an error nothing is known to be written.
	Beat(ctx context.Context, b BeatRecord) (lost []Claim, err error)
	// Streams returns every current claim, sorted by stream name, with
	// its owner's record and its relays, in one call to the store: the
	// cluster's stream listing.
	Streams(ctx context.Context) ([]StreamRecord, error)
	// Claimed returns a channel that receives every claim made from now
	// on, by any node, until ctx ends; then it is closed. Delivery is
	// prompt but not assured (a slow reader or a store that is away loses
	// some): it only hastens what renewals and retries find anyway.
	Claimed(ctx context.Context) <-chan Claim

	// SetStreamInfo records what the owner of name says of it, for one
	// NodeTimeout unless set again; its Timeline, if any, is kept
	// TimelineTTL for the stream's next claim (Claim.Prior).
	SetStreamInfo(ctx context.Context, name streamname.Name, info StreamInfo) error
	// StreamInfos returns the current stream records by name.
	StreamInfos(ctx context.Context) (map[streamname.Name]StreamInfo, error)

	// SetRelay records that r.Node relays name, for RelayLife NodeTimeouts
	// unless set again; the record counts only while r.Node is alive.
	SetRelay(ctx context.Context, name streamname.Name, r Relay) error
	// DeleteRelay removes node's relay record of name.
	DeleteRelay(ctx context.Context, name streamname.Name, node NodeID) error
	// Relays returns the current relays of name of live nodes, sorted by
	// node.
	Relays(ctx context.Context, name streamname.Name) ([]Relay, error)

	// SetPushes stores the restreams added to name through the admin API,
	// an opaque record (meshcast seals it: it holds stream keys) of at
	// most MaxPushesRecord bytes, kept until replaced; an empty record
	// removes it. They outlive the stream and its owner, so whichever
	// node owns the stream next pushes them.
	SetPushes(ctx context.Context, name streamname.Name, rec []byte) error
	// Pushes returns name's record, nil when there is none.
	Pushes(ctx context.Context, name streamname.Name) ([]byte, error)

	// Close releases the registry's connections. It does not remove
	// anything from the store.
	Close() error
}

// EpochTTL is how long a registry remembers a name's epoch counter after
// its last claim or renewal. A name claimed again after that numbers from
// the store's clock in milliseconds, so its epochs still only grow.
const EpochTTL = 24 * time.Hour

// DefaultNodeTimeout is how long a node stays alive, and a claim held,
// without a heartbeat or a renewal.
const DefaultNodeTimeout = 5 * time.Second
