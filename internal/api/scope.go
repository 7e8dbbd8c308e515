package api

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/streamname"
)

// maxClusterStreams bounds the streams of one cluster listing (GET
// /api/v1/streams?scope=cluster and GET /api/v1/cluster), which the
// registry reads in one call: it bounds the answer's size.
const maxClusterStreams = 1000

// StreamRecord is what this node writes to the registry for a stream it
// owns, with each renewal (cluster.StreamInfo.Info): the stream as
// GET /api/v1/streams describes it, less what the cluster listing adds
// (owner, relays, viewers) and the publisher's address. nil when the
// stream is not here.
func (a *API) StreamRecord(name streamname.Name) json.RawMessage {
	s := a.hub.Get(name)
	if s == nil {
		return nil
	}
	out := a.toJSON(s.Info())
	if out.Publisher != nil {
		out.Publisher.RemoteAddr = ""
	}
	out.Viewers, out.ViewersTotal, out.Relays, out.Owner = nil, 0, nil, nil
	if a.Pushes != nil {
		out.Pushes = a.Pushes(name)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// StreamViewers counts this node's viewers of its busiest streams by
// protocol, other nodes' relays not counted, for its heartbeat: at most
// limit streams (0: none).
func (a *API) StreamViewers(limit int) map[streamname.Name]map[string]int {
	if limit <= 0 {
		return nil
	}
	type counted struct {
		name  streamname.Name
		by    map[string]int
		total int
	}
	var all []counted
	for _, s := range a.hub.List() {
		d := a.toJSON(s.Info())
		delete(d.Viewers, relayProtocol)
		all = append(all, counted{s.Name(), d.Viewers, d.ViewersTotal})
	}
	slices.SortFunc(all, func(x, y counted) int {
		return cmp.Or(cmp.Compare(y.total, x.total), cmp.Compare(x.name, y.name))
	})
	out := make(map[streamname.Name]map[string]int, min(len(all), limit))
	for _, c := range all[:min(len(all), limit)] {
		out[c.name] = c.by
	}
	return out
}

// ClusterStreams describes every live stream of the cluster as
// GET /api/v1/streams?scope=cluster answers, from the registry alone: the
// owner's record of each claimed stream (codecs, size, bitrate), its owner
// and relays, and its viewers by protocol summed over the nodes'
// heartbeats. No request goes to another node.
func (a *API) ClusterStreams(ctx context.Context) ([]Stream, error) {
	if a.cluster == nil {
		return a.Streams(ctx, false), nil
	}
	// Two round trips to the store, however many streams: the streams
	// with their records and relays, and the nodes.
	streams, err := a.cluster.Streams(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := a.cluster.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Stream, 0, min(len(streams), maxClusterStreams))
	for _, rec := range streams[:min(len(streams), maxClusterStreams)] {
		c := rec.Claim
		s := Stream{Name: string(c.Stream), App: c.Stream.App(), Stream: c.Stream.Stream()}
		if info := rec.Info; info != nil && info.Node == c.Node {
			json.Unmarshal(info.Info, &s) // what the owner said; the rest is ours
			s.Name, s.App, s.Stream = string(c.Stream), c.Stream.App(), c.Stream.Stream()
		}
		claim := cluster.Claim{Stream: c.Stream, Node: c.Node, Epoch: c.Epoch}
		s.Owner = &claim
		s.Relays = rec.Relays
		if s.Relays == nil {
			s.Relays = []cluster.Relay{}
		}
		s.Viewers = make(map[string]int, len(protocols))
		for _, p := range protocols {
			s.Viewers[p] = 0
		}
		s.ViewersTotal = 0
		for _, n := range nodes {
			for p, v := range n.StreamViewers[c.Stream] {
				if p == relayProtocol {
					continue
				}
				s.Viewers[p] += v
				s.ViewersTotal += v
			}
		}
		s.Viewers[relayProtocol] = len(s.Relays)
		out = append(out, s)
	}
	return out, nil
}

// StatsJSON describes the node's streams for the dashboard's "stats"
// events, as GET /api/v1/streams does for anyone, with the node's name.
func (a *API) StatsJSON(node cluster.NodeID) json.RawMessage {
	b, _ := json.Marshal(struct {
		Node    cluster.NodeID `json:"node"`
		Streams []Stream       `json:"streams"`
	}{node, a.Streams(context.Background(), false)})
	return b
}

// ClusterJSON describes the cluster's streams for the dashboard's
// "cluster:streams" events, as GET /api/v1/streams?scope=cluster does;
// nil while the registry cannot be reached.
func (a *API) ClusterJSON() json.RawMessage {
	ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
	defer cancel()
	streams, err := a.ClusterStreams(ctx)
	if err != nil {
		return nil
	}
	b, _ := json.Marshal(struct {
		Streams []Stream `json:"streams"`
	}{streams})
	return b
}
