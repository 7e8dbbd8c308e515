package vod

import (
	"context"
	"slices"
	"testing"

	"github.com/meshcast/meshcast/internal/cluster"
)

type nodeList []cluster.Node

func (l nodeList) Nodes(context.Context) ([]cluster.Node, error) { return l, nil }

// Every node ranks the owners of an asset alike, by the cluster's
// rendezvous hash, and knows itself among them.
func TestClusterPeersRanked(t *testing.T) {
	nodes := nodeList{{ID: "a", HTTPAddr: "a:1"}, {ID: "b", HTTPAddr: "b:1"}, {ID: "c", HTTPAddr: "c:1"}}
	client := cluster.NewPeerClient("a-cluster-secret-of-some-length", func() cluster.NodeID { return "b" })
	p := NewClusterPeers(nodes, client, func() cluster.NodeID { return "b" }, nil)
	for _, name := range []string{"film.mp4", "talk.mp4", "x.flv"} {
		got := p.Ranked(context.Background(), name)
		if len(got) != 3 {
			t.Fatalf("%s: %d peers", name, len(got))
		}
		if !slices.IsSortedFunc(got, func(x, y Peer) int {
			hx, hy := cluster.RendezvousHash(cluster.NodeID(x.ID), name), cluster.RendezvousHash(cluster.NodeID(y.ID), name)
			switch {
			case hx > hy:
				return -1
			case hx < hy:
				return 1
			}
			return 0
		}) {
			t.Errorf("%s: %v not ranked by the rendezvous hash", name, got)
		}
		for _, peer := range got {
			if peer.Self != (peer.ID == "b") || peer.URL != "http://"+peer.ID+":1" {
				t.Errorf("%s: %+v", name, peer)
			}
		}
	}
}
