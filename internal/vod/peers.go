package vod

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
)

// Timing of ClusterPeers.
const (
	// nodesTTL is how long ClusterPeers keeps the registry's node list.
	nodesTTL = time.Second
	// nodesWait bounds one question to the registry.
	nodesWait = 2 * time.Second
)

// NodeLister lists the cluster's live nodes (cluster.Registry).
type NodeLister interface {
	Nodes(ctx context.Context) ([]cluster.Node, error)
}

// ClusterPeers is Peers over the cluster: the registry's live nodes,
// ranked by rendezvous hashing (cluster.RendezvousHash) on the asset
// name, and requests signed and checked by the node's cluster.PeerClient.
// The node list is kept for a second, so that requests do not each ask
// the registry.
type ClusterPeers struct {
	reg    NodeLister
	client *cluster.PeerClient
	self   func() cluster.NodeID
	log    *slog.Logger

	mu    sync.Mutex
	nodes []cluster.Node
	at    time.Time
}

var _ Peers = (*ClusterPeers)(nil)

// NewClusterPeers returns the cluster of the nodes reg lists, as the node
// self names (asked at each ranking: a node's ID is settled when it
// starts) sees it.
func NewClusterPeers(reg NodeLister, client *cluster.PeerClient, self func() cluster.NodeID, log *slog.Logger) *ClusterPeers {
	if log == nil {
		log = slog.Default()
	}
	return &ClusterPeers{reg: reg, client: client, self: self, log: log}
}

func (p *ClusterPeers) live(ctx context.Context) []cluster.Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) < nodesTTL && p.nodes != nil {
		return p.nodes
	}
	ctx, cancel := context.WithTimeout(ctx, nodesWait)
	defer cancel()
	nodes, err := p.reg.Nodes(ctx)
	if err != nil {
		p.log.Warn("vod: registry unavailable, using the last node list", "err", err)
		return p.nodes
	}
	p.nodes, p.at = nodes, time.Now()
	return nodes
}

// Ranked implements Peers.
func (p *ClusterPeers) Ranked(ctx context.Context, name string) []Peer {
	self := p.self()
	nodes := p.live(ctx)
	out := make([]Peer, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, Peer{ID: string(n.ID), URL: "http://" + n.HTTPAddr, Self: n.ID == self})
	}
	slices.SortFunc(out, func(x, y Peer) int { // highest first
		return cmp.Compare(cluster.RendezvousHash(cluster.NodeID(y.ID), name), cluster.RendezvousHash(cluster.NodeID(x.ID), name))
	})
	return out
}

// Sign implements Peers.
func (p *ClusterPeers) Sign(r *http.Request) { p.client.Sign(r) }

// Verify implements Peers.
func (p *ClusterPeers) Verify(r *http.Request) error {
	_, err := p.client.Verify(r)
	return err
}

// Client implements Peers: the PeerClient's, which bounds connecting
// only, so that a copy's answer may come after its whole upload.
func (p *ClusterPeers) Client() *http.Client { return p.client.HTTP() }
