package app

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/push"
	"github.com/meshcast/meshcast/internal/streamname"
)

// newPush builds the node's restreams: the configured targets of the
// current configuration, and those added through the API kept in the
// registry, sealed with the cluster secret, so the stream's next owner
// pushes them too. Their status reaches the API's stream records, the
// metrics and the dashboards' "push" events.
func (a *App) newPush(cfg config.Config, mreg prometheus.Registerer) {
	a.push = push.New(push.Config{
		Targets:      func(name streamname.Name) []string { c := a.current(); return c.PushTargets(name) },
		Store:        a.registry,
		Sealer:       cluster.NewSealer(cfg.ClusterSecret, "pushes"),
		AllowPrivate: cfg.PushAllowPrivate,
		NodeAddrs:    a.nodeAddrs,
		Logger:       a.log,
	}, a.Hub)
	a.push.OnChange(func(s push.Status) {
		if srv := a.events.Server(); srv != nil {
			b, _ := json.Marshal(s)
			srv.Notify("push", b)
		}
	})
	a.api.Pushes = a.push.Of
	mreg.MustRegister(a.push.Collector())
}

// nodeAddrs returns the addresses of the cluster's nodes, which no push
// target may resolve to.
func (a *App) nodeAddrs() []netip.Addr {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	nodes, err := a.registry.Nodes(ctx)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []netip.Addr
	for _, n := range nodes {
		for _, hp := range []string{n.RTMPAddr, n.HTTPAddr} {
			host, _, err := net.SplitHostPort(hp)
			if err != nil || seen[host] {
				continue
			}
			seen[host] = true
			if ip, err := netip.ParseAddr(host); err == nil {
				out = append(out, ip.Unmap())
				continue
			}
			ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			for _, ip := range ips {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
