package app

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cache"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/vod"
)

// metaCacheSize and metaTTL bound the cache of asset descriptions fetched
// from other nodes: a replaced asset is noticed within metaTTL.
const (
	metaCacheSize = 4 << 20
	metaTTL       = 10 * time.Second
)

// vodParts are the on-demand library's resources, closed with the node.
type vodParts struct {
	lib   *vod.Library
	dirs  []*vod.Dir
	cache *cache.Cache
	meta  *cache.Cache
	l2    cache.L2
}

// newVOD builds the on-demand library over --vod-dir and the recordings,
// with its caches. Without either the library is empty and says so to
// uploads.
func (a *App) newVOD(cfg config.Config, reg prometheus.Registerer, admin func(http.HandlerFunc) http.HandlerFunc, extra ...string) (*vodParts, error) {
	p := &vodParts{}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()
	stores := []vod.Storage{nil} // uploads go to --vod-dir, when set
	if cfg.VODDir != "" {
		d, err := vod.OpenDir(cfg.VODDir)
		if err != nil {
			return nil, fmt.Errorf("--vod-dir: %w", err)
		}
		p.dirs = append(p.dirs, d)
		stores[0] = d
	}
	for _, dir := range extra {
		d, err := vod.OpenDir(dir)
		if err != nil {
			return nil, err
		}
		p.dirs = append(p.dirs, d)
		stores = append(stores, d)
	}
	size, _ := config.ParseSize(cfg.CacheSize) // validated
	maxUpload, _ := config.ParseSize(cfg.VODMaxUpload)
	if cfg.CacheL2 != "" {
		l2, err := cache.NewL2(cfg.CacheL2, cache.L2Options{})
		if err != nil {
			return nil, fmt.Errorf("--cache-l2: %w", err)
		}
		p.l2 = l2
	}
	var err error
	p.cache, err = cache.New(cache.Config{MaxBytes: size, L2: p.l2, MetricsLabels: prometheus.Labels{"cache": "vod"}, Logger: a.log})
	if err != nil {
		return nil, err
	}
	p.meta, err = cache.New(cache.Config{MaxBytes: metaCacheSize, TTL: metaTTL, L2: p.l2, MetricsLabels: prometheus.Labels{"cache": "vod_meta"}, Logger: a.log})
	if err != nil {
		return nil, err
	}
	if err := reg.Register(p.cache.Collector()); err != nil {
		return nil, err
	}
	if err := reg.Register(p.meta.Collector()); err != nil {
		return nil, err
	}
	var peers vod.Peers
	if cfg.ClusterSecret != "" {
		peers = &vodPeers{a: a}
	}
	p.lib, err = vod.New(vod.Config{
		Stores:          stores,
		Cache:           p.cache,
		Meta:            p.meta,
		SegmentDuration: cfg.VODSegmentDuration,
		MaxUpload:       maxUpload,
		Peers:           peers,
		Replicas:        cfg.VODReplicas,
		Admin:           admin,
		Metrics:         reg,
		Logger:          a.log,
	})
	if err != nil {
		return nil, err
	}
	ok = true
	return p, nil
}

// Close releases the library, its caches and its directories.
func (p *vodParts) Close() error {
	if p == nil {
		return nil
	}
	if p.lib != nil {
		p.lib.Close()
	}
	for _, c := range []*cache.Cache{p.cache, p.meta} {
		if c != nil {
			c.Close()
		}
	}
	if p.l2 != nil {
		p.l2.Close()
	}
	for _, d := range p.dirs {
		d.Close()
	}
	return nil
}

// vodPeers is the cluster as the library sees it: the registry's live
// nodes, ranked by rendezvous hashing on the asset name. The node list is
// kept for a second, so that requests do not each ask the registry.
type vodPeers struct {
	a *App

	mu    sync.Mutex
	nodes []cluster.Node
	at    time.Time
}

// nodesTTL is how long vodPeers keeps the registry's node list.
const nodesTTL = time.Second

func (p *vodPeers) live(ctx context.Context) []cluster.Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) < nodesTTL && p.nodes != nil {
		return p.nodes
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nodes, err := p.a.registry.Nodes(ctx)
	if err != nil {
		p.a.log.Warn("vod: registry unavailable, using the last node list", "err", err)
		return p.nodes
	}
	p.nodes, p.at = nodes, time.Now()
	return nodes
}

// Ranked implements vod.Peers.
func (p *vodPeers) Ranked(ctx context.Context, name string) []vod.Peer {
	var self cluster.NodeID
	if m := p.a.member.Load(); m != nil {
		self = m.ID()
	}
	nodes := p.live(ctx)
	out := make([]vod.Peer, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, vod.Peer{ID: string(n.ID), URL: "http://" + n.HTTPAddr, Self: n.ID == self})
	}
	slices.SortFunc(out, func(x, y vod.Peer) int { // highest first
		return cmp.Compare(cluster.RendezvousHash(cluster.NodeID(y.ID), name), cluster.RendezvousHash(cluster.NodeID(x.ID), name))
	})
	return out
}

// Sign implements vod.Peers.
func (p *vodPeers) Sign(r *http.Request) { p.a.peers.Sign(r) }

// Verify implements vod.Peers.
func (p *vodPeers) Verify(r *http.Request) error {
	_, err := p.a.peers.Verify(r)
	return err
}

// Client implements vod.Peers.
func (p *vodPeers) Client() *http.Client { return p.a.peers.HTTP() }
