package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/buildinfo"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Option changes how New builds a node.
type Option func(*App)

// WithRegistry makes the node use reg as its cluster registry instead of
// the one its configuration names; several in-process nodes can share one
// in-memory registry. The caller closes reg.
func WithRegistry(reg cluster.Registry) Option {
	return func(a *App) { a.registry, a.ownRegistry = reg, false }
}

// newRegistry builds the registry cfg names: Redis, or memory.
func newRegistry(cfg config.Config) (cluster.Registry, error) {
	if cfg.Redis == "" {
		return cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: cfg.NodeTimeout}), nil
	}
	reg, err := cluster.NewRedis(cluster.RedisConfig{URL: cfg.Redis, Prefix: cfg.RedisPrefix, NodeTimeout: cfg.NodeTimeout})
	if err != nil {
		return nil, fmt.Errorf("config: --redis: %w", err)
	}
	return reg, nil
}

// nodeID is this node's ID: the configured one, or the host name and the
// bound ports.
func nodeID(cfg config.Config, rtmpPort, httpPort string) cluster.NodeID {
	if cfg.NodeID != "" {
		return cluster.NodeID(cfg.NodeID)
	}
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, host)
	if host == "" {
		host = "meshcast"
	}
	id := fmt.Sprintf("%s-%s-%s", host, rtmpPort, httpPort)
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return cluster.NodeID(id)
}

// advertiseHost is the host peers and clients reach this node at.
func advertiseHost(cfg config.Config) string {
	if cfg.AdvertiseHost != "" {
		return cfg.AdvertiseHost
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// startCluster joins the cluster once the listeners are bound: the node's
// addresses are known from then on.
func (a *App) startCluster() {
	cfg := a.cfg
	rtmpPort, httpPort := port(a.RTMPAddr()), port(a.HTTPAddr())
	host := advertiseHost(cfg)
	capacity := cfg.Capacity
	if capacity == 0 {
		capacity = cfg.MaxConnections
	}
	self := cluster.Node{
		ID:       nodeID(cfg, rtmpPort, httpPort),
		Region:   cfg.Region,
		RTMPAddr: net.JoinHostPort(host, rtmpPort),
		HTTPAddr: net.JoinHostPort(host, httpPort),
		Capacity: capacity,
		Started:  time.Now().UTC(),
		Version:  buildinfo.String(),
	}
	var relays *cluster.Relays
	if cfg.ClusterSecret != "" {
		parents := make([]cluster.NodeID, len(cfg.Parent))
		for i, p := range cfg.Parent {
			parents[i] = cluster.NodeID(p)
		}
		relays = cluster.NewRelays(cluster.RelayConfig{
			Self:     self.ID,
			Region:   cfg.Region,
			Registry: a.registry,
			Secret:   cfg.ClusterSecret,
			Client:   a.peers,
			Parents:  parents,
			Mesh:     cfg.Mesh,
			Idle:     cfg.RelayIdle,
			Logger:   a.log,
		}, a.Hub)
	}
	var active func() map[streamname.Name]cluster.NodeID
	if relays != nil {
		active = relays.Active
	}
	m := cluster.NewMember(cluster.MemberConfig{
		Self:        self,
		Registry:    a.registry,
		Secret:      cfg.ClusterSecret,
		Load:        cluster.NewLoadMeter(a.Hub, a.sender).Load,
		Relays:      active,
		OnLost:      a.Hub.Revoke,
		Logger:      a.log,
		Every:       cluster.HeartbeatEvery(cfg.NodeTimeout),
		NodeTimeout: cfg.NodeTimeout,
		// The cluster listing (GET /api/v1/streams?scope=cluster) reads
		// these from the registry.
		StreamInfo:    a.api.StreamRecord,
		Timeline:      a.timeline,
		StreamViewers: func() map[streamname.Name]map[string]int { return a.api.StreamViewers(cfg.MetricsMaxStreams) },
	})
	m.Start()
	a.relays.Store(relays)
	a.member.Store(m)
	a.log.Info("cluster node started", "node", self.ID, "rtmp", self.RTMPAddr, "http", self.HTTPAddr,
		"registry", registryKind(cfg), "relays", relays != nil)
}

func registryKind(cfg config.Config) string {
	if cfg.Redis != "" {
		return "redis"
	}
	return "memory"
}

// stopCluster leaves the cluster, once the streams have ended and their
// claims are being given up.
func (a *App) stopCluster() {
	if m := a.member.Load(); m != nil {
		m.Close()
	}
}

// relayUpstreams counts the streams this node pulls from other nodes.
func (a *App) relayUpstreams() int {
	if r := a.relays.Load(); r != nil {
		return len(r.Active())
	}
	return 0
}

// owner and upstream connect the hub to the cluster, which is joined only
// at Start.
type owner struct{ a *App }

func (o owner) Claim(name streamname.Name, credential string) (func(), *stream.Position, error) {
	m := o.a.member.Load()
	if m == nil {
		return nil, nil, errors.New("node not started")
	}
	release, prior, err := m.Claim(name, credential)
	if err != nil || prior == nil {
		return release, nil, err
	}
	// The last owner's wall clock: nodes' clocks agree within
	// clock.MaxSkew, and the stream bounds what it makes of the time
	// since (stream.Follow).
	return release, &stream.Position{DTS: prior.DTS, At: time.UnixMilli(prior.At)}, nil
}

// timeline is where the timestamps of a stream this node owns stand, for
// its record in the registry (cluster.StreamInfo.Timeline); nil when the
// stream is not here or has no packets.
func (a *App) timeline(name streamname.Name) *cluster.Timeline {
	s := a.Hub.Get(name)
	if s == nil {
		return nil
	}
	p, ok := s.Position()
	if !ok {
		return nil
	}
	return &cluster.Timeline{DTS: p.DTS, At: p.At.UnixMilli()}
}

type upstream struct{ a *App }

func (u upstream) Pull(name streamname.Name, via []string) error {
	if u.a.sources.Has(name) {
		// A source is pulled by the node its first viewer reaches, unless
		// another node holds it already: then it is relayed from there.
		err := u.a.sources.Open(name)
		if err == nil || !errors.Is(err, cluster.ErrClaimed) {
			return err
		}
	}
	r := u.a.relays.Load()
	if r == nil {
		return hub.ErrNotFound
	}
	ids := make([]cluster.NodeID, len(via))
	for i, id := range via {
		ids[i] = cluster.NodeID(id)
	}
	return r.Pull(name, ids)
}

// relayPath is the path of a stream this node relays (cluster.Relays.Path).
func (a *App) relayPath(name streamname.Name) []cluster.NodeID {
	if r := a.relays.Load(); r != nil {
		return r.Path(name)
	}
	return nil
}

// ownerAddr is the HTTP address of the node that owns name, for requests
// made there instead of opening a relay (snapshots).
func (a *App) ownerAddr(ctx context.Context, name streamname.Name) (string, error) {
	c, err := a.registry.Owner(ctx, name)
	if err != nil {
		return "", err
	}
	if string(c.Node) == a.nodeID() {
		return "", fmt.Errorf("%s is owned here, and not live", name)
	}
	n, err := a.registry.Node(ctx, c.Node)
	if err != nil {
		return "", err
	}
	return n.HTTPAddr, nil
}
