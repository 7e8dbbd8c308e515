package app

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/procstat"
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
		Self:     self,
		Registry: a.registry,
		Secret:   cfg.ClusterSecret,
		Load:     newLoadMeter(a.Hub, a.sender).load,
		Relays:   active,
		OnLost:   a.Hub.Revoke,
		Logger:   a.log,
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

func (o owner) Claim(name streamname.Name, credential string) (func(), error) {
	m := o.a.member.Load()
	if m == nil {
		return nil, errors.New("node not started")
	}
	return m.Claim(name, credential)
}

type upstream struct{ a *App }

func (u upstream) Pull(name streamname.Name, via []string) error {
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

// servePull serves a stream to another node of the cluster, for requests
// signed with the cluster secret.
func (a *App) servePull(w http.ResponseWriter, r *http.Request) {
	from, err := cluster.VerifyPull(r, a.cfg.ClusterSecret, time.Now())
	if err != nil {
		a.log.Warn("pull refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	chain, err := cluster.ParseVia(r, cluster.NodeID(a.nodeID()))
	if err != nil {
		// This node is already in the pull's chain: relays configured in
		// a circle. The puller goes to the owner instead.
		a.log.Warn("pull refused: it came round to this node again", "stream", name, "node", from, "err", err)
		http.Error(w, err.Error(), http.StatusLoopDetected)
		return
	}
	var path []cluster.NodeID // the nodes the stream comes through to here
	if relays := a.relays.Load(); relays != nil {
		path = relays.Path(name)
	}
	for _, id := range path {
		if slices.Contains(chain, id) {
			// This node relays the stream from the puller, or through it.
			a.log.Warn("pull refused: this node gets the stream through the puller", "stream", name, "node", from, "path", cluster.FormatPath(path))
			http.Error(w, fmt.Sprintf("%v: the stream comes here through %s", cluster.ErrLoop, id), http.StatusLoopDetected)
			return
		}
	}
	w.Header().Set(cluster.HeaderPath, cluster.FormatPath(path))
	via := make([]string, len(chain))
	for i, id := range chain {
		via[i] = string(id)
	}
	a.log.Debug("pull", "stream", name, "node", from)
	a.flv.ServePull(w, r, name, hub.RelayProtocol, cluster.EndTag(), via)
}

// loadWindow is the shortest span the load meter turns into rates. The
// kernel counts a process's CPU time in ticks of 10 ms, so a span of a few
// milliseconds can show one tick as many cores' worth: the first heartbeat
// comes right after the meter starts.
const loadWindow = 500 * time.Millisecond

// loadMeter measures the node's load for heartbeats: viewers and streams
// now, CPU and egress over the last window of at least loadWindow.
type loadMeter struct {
	hub    *hub.Hub
	sender *egress.Sender

	mu       sync.Mutex
	at       time.Time     // the window's start
	lastSent uint64        // bytes sent at its start
	lastCPU  time.Duration // the process's CPU time at its start
	rates    cluster.Load  // CPU and EgressBPS over the last whole window
}

func newLoadMeter(h *hub.Hub, s *egress.Sender) *loadMeter {
	m := &loadMeter{hub: h, sender: s, at: time.Now(), lastSent: s.BytesSent()}
	if st, err := procstat.Read(0); err == nil {
		m.lastCPU = st.CPU
	}
	return m
}

func (m *loadMeter) load() cluster.Load {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if span := now.Sub(m.at); span >= loadWindow {
		sent := m.sender.BytesSent()
		m.rates.EgressBPS = int64(float64(sent-m.lastSent) * 8 / span.Seconds())
		if st, err := procstat.Read(0); err == nil {
			m.rates.CPU = min(max((st.CPU-m.lastCPU).Seconds()/span.Seconds()/float64(runtime.NumCPU()), 0), 1)
			m.lastCPU = st.CPU
		}
		m.at, m.lastSent = now, sent
	}
	l := m.rates
	l.Streams, l.Viewers = m.hub.Load()
	return l
}
