package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
)

func node(id string) cluster.Node {
	return cluster.Node{ID: cluster.NodeID(id), RTMPAddr: "127.0.0.1:1935", HTTPAddr: "127.0.0.1:8080", Capacity: 10, State: cluster.StateServing}
}

// Answers the cluster acts on (a refused claim, a lost lease, an unknown
// node) are timed but are not errors.
func TestMetricsRegistryAnswersAreNotErrors(t *testing.T) {
	mem := cluster.NewMemory(cluster.MemoryConfig{NodeTimeout: 5 * time.Second})
	reg := prometheus.NewPedanticRegistry()
	r := InstrumentRegistry(mem, reg)
	t.Cleanup(func() { r.Close() })
	ctx := context.Background()

	for _, id := range []string{"a", "b"} {
		if err := r.Heartbeat(ctx, node(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Node(ctx, "nobody"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("Node(nobody) = %v, want ErrNotFound", err)
	}
	old, err := r.Claim(ctx, "live/s", "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Claim(ctx, "live/s", "b", ""); !errors.Is(err, cluster.ErrClaimed) {
		t.Fatalf("Claim by b = %v, want ErrClaimed", err)
	}
	cur, err := r.Claim(ctx, "live/s", "a", "") // a publisher back on a: a newer epoch
	if err != nil || cur.Epoch <= old.Epoch {
		t.Fatalf("reclaim = %+v, %v", cur, err)
	}
	if err := r.Renew(ctx, old); !errors.Is(err, cluster.ErrLost) {
		t.Fatalf("Renew of the old claim = %v, want ErrLost", err)
	}
	if err := r.Release(ctx, old); !errors.Is(err, cluster.ErrLost) {
		t.Fatalf("Release of the old claim = %v, want ErrLost", err)
	}
	if _, err := r.Owner(ctx, "live/none"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("Owner(live/none) = %v, want ErrNotFound", err)
	}
	if err := r.SetRelay(ctx, "live/s", cluster.Relay{Node: "b", Upstream: "a"}); err != nil {
		t.Fatal(err)
	}
	if rs, err := r.Relays(ctx, "live/s"); err != nil || len(rs) != 1 {
		t.Fatalf("Relays = %v, %v", rs, err)
	}
	if err := r.DeleteRelay(ctx, "live/s", "b"); err != nil {
		t.Fatal(err)
	}
	if cs, err := r.Claims(ctx); err != nil || len(cs) != 1 {
		t.Fatalf("Claims = %v, %v", cs, err)
	}
	if ns, err := r.Nodes(ctx); err != nil || len(ns) != 2 {
		t.Fatalf("Nodes = %v, %v", ns, err)
	}
	if err := r.Renew(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := r.Leave(ctx, "b"); err != nil {
		t.Fatal(err)
	}

	got := scrape(t, reg)
	calls := map[string]float64{
		OpHeartbeat: 2, OpNode: 1, OpClaim: 3, OpRenew: 2, OpRelease: 2, OpOwner: 1,
		OpSetRelay: 1, OpRelays: 1, OpDeleteRelay: 1, OpClaims: 1, OpNodes: 1, OpLeave: 1,
	}
	for _, op := range registryOps {
		want(t, got, fmt.Sprintf(`meshcast_registry_request_duration_seconds_count{op=%q}`, op), calls[op])
		want(t, got, fmt.Sprintf(`meshcast_registry_errors_total{op=%q}`, op), 0)
	}
}

// A store that cannot be reached fails with ErrUnavailable, which counts
// under the op that failed.
func TestMetricsRegistryUnavailableCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	rd, err := cluster.NewRedis(cluster.RedisConfig{URL: "redis://" + addr + "/0", OpTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	r := InstrumentRegistry(rd, reg)
	t.Cleanup(func() { r.Close() })
	ctx := context.Background()

	for range 2 {
		if err := r.Heartbeat(ctx, node("a")); !errors.Is(err, cluster.ErrUnavailable) {
			t.Fatalf("Heartbeat = %v, want ErrUnavailable", err)
		}
	}
	if _, err := r.Claim(ctx, "live/s", "a", ""); !errors.Is(err, cluster.ErrUnavailable) {
		t.Fatalf("Claim = %v, want ErrUnavailable", err)
	}
	got := scrape(t, reg)
	want(t, got, `meshcast_registry_errors_total{op="heartbeat"}`, 2)
	want(t, got, `meshcast_registry_errors_total{op="claim"}`, 1)
	want(t, got, `meshcast_registry_errors_total{op="renew"}`, 0)
	want(t, got, `meshcast_registry_request_duration_seconds_count{op="heartbeat"}`, 2)
	if s := got[`meshcast_registry_request_duration_seconds_sum{op="heartbeat"}`]; s <= 0 || s > 2 {
		t.Errorf("heartbeat duration sum = %v s, want a short positive time", s)
	}
}

func TestMetricsIsFailure(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{cluster.ErrClaimed, false},
		{fmt.Errorf("cluster: renew: %w", cluster.ErrLost), false},
		{cluster.ErrNotFound, false},
		{fmt.Errorf("cluster: heartbeat: %w: %w", cluster.ErrUnavailable, context.DeadlineExceeded), true},
		{errors.New("cluster: nodes: bad record"), true},
	} {
		if got := IsFailure(tt.err); got != tt.want {
			t.Errorf("IsFailure(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
