package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

func TestRedisRegistry(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t, 0)
	runRegistrySuite(t, redisUnderTest(srv.URL()))
}

// TestRedisClusterRegistry runs the suite on a Redis Cluster of three
// masters. The hash-tagged key prefix keeps every key of a script, the
// owner's node key included, in one slot of one master.
func TestRedisClusterRegistry(t *testing.T) {
	t.Parallel()
	c := testutil.StartRedisCluster(t, 3)
	if opts, err := RedisOptions(c.URL()); err != nil || !isCluster(opts) {
		t.Fatalf("%s is not a cluster URL: %v", c.URL(), err)
	}
	runRegistrySuite(t, redisUnderTest(c.URL()))
}

// TestRedisSentinelRegistry runs the suite through three sentinels that
// watch a master and its replica.
func TestRedisSentinelRegistry(t *testing.T) {
	t.Parallel()
	s := testutil.StartRedisSentinel(t)
	if opts, err := RedisOptions(s.URL()); err != nil || opts.MasterName != s.Name {
		t.Fatalf("%s is not a sentinel URL: %v", s.URL(), err)
	}
	runRegistrySuite(t, redisUnderTest(s.URL()))
}

// redisUnderTest opens registries on the store at url, emptied first.
func redisUnderTest(url string) registryUnderTest {
	wipe := func(t *testing.T, reg Registry) {
		var err error
		switch c := reg.(*Redis).client.(type) {
		case *redis.ClusterClient:
			err = c.ForEachMaster(bg, func(ctx context.Context, m *redis.Client) error {
				return m.FlushAll(ctx).Err()
			})
		default:
			err = c.FlushAll(bg).Err()
		}
		if err != nil {
			t.Fatalf("FLUSHALL: %v", err)
		}
	}
	return registryUnderTest{
		open: func(t *testing.T, timeout time.Duration) Registry {
			reg := openRedis(t, url, timeout, 0)
			wipe(t, reg)
			return reg
		},
		wipe: wipe,
	}
}

// TestRedisKeys pins the key layout documented on Redis, and that listing
// prunes the index sets.
func TestRedisKeys(t *testing.T) {
	srv := testutil.StartRedis(t, 0)
	reg := openRedis(t, srv.URL(), shortTimeout, 0)
	rdb := reg.client
	mustHeartbeat(t, reg, nodeA)
	c := mustClaim(t, reg, nameA, nodeA)
	wantFirstEpoch(t, c)
	epoch := fmt.Sprint(c.Epoch)
	if err := reg.SetRelay(bg, nameA, Relay{Node: nodeB, Upstream: nodeA}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"meshcast:claim:live/show":        epoch + ":node-a",
		"meshcast:epoch:live/show":        epoch,
		"meshcast:relay:live/show:node-b": "node-a",
	} {
		if got, err := rdb.Get(bg, key).Result(); err != nil || got != want {
			t.Errorf("GET %s = %q, %v; want %q", key, got, err, want)
		}
	}
	if rec, err := rdb.Get(bg, "meshcast:node:node-a").Result(); err != nil || !strings.Contains(rec, `"id":"node-a"`) {
		t.Errorf("GET meshcast:node:node-a = %q, %v", rec, err)
	}
	for key, want := range map[string]string{
		"meshcast:nodes":            "[node-a]",
		"meshcast:claims":           "[live/show]",
		"meshcast:relays:live/show": "[node-b]",
	} {
		if got, err := rdb.SMembers(bg, key).Result(); err != nil || fmt.Sprint(got) != want {
			t.Errorf("SMEMBERS %s = %v, %v; want %s", key, got, err, want)
		}
	}
	for _, key := range []string{"meshcast:node:node-a", "meshcast:claim:live/show", "meshcast:nodes", "meshcast:claims"} {
		if ttl, err := rdb.PTTL(bg, key).Result(); err != nil || ttl <= 0 || ttl > shortTimeout {
			t.Errorf("PTTL %s = %v, %v; want within (0, %v]", key, ttl, err, shortTimeout)
		}
	}
	for _, key := range []string{"meshcast:relay:live/show:node-b", "meshcast:relays:live/show"} {
		if ttl, err := rdb.PTTL(bg, key).Result(); err != nil || ttl <= (RelayLife-1)*shortTimeout || ttl > RelayLife*shortTimeout {
			t.Errorf("PTTL %s = %v, %v; want within (%v, %v]", key, ttl, err, (RelayLife-1)*shortTimeout, RelayLife*shortTimeout)
		}
	}
	if ttl, err := rdb.PTTL(bg, "meshcast:epoch:live/show").Result(); err != nil || ttl <= EpochTTL-time.Minute || ttl > EpochTTL {
		t.Errorf("PTTL of the epoch counter = %v, %v; want EpochTTL (%v)", ttl, err, EpochTTL)
	}

	// Listing prunes members whose record is gone; the epoch stays.
	if err := reg.Release(bg, c); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(bg, "meshcast:node:node-a", "meshcast:relay:live/show:node-b").Err(); err != nil {
		t.Fatal(err)
	}
	if ids := nodeIDs(t, reg); len(ids) != 0 {
		t.Fatalf("Nodes = %v", ids)
	}
	if rs, err := reg.Relays(bg, nameA); err != nil || len(rs) != 0 {
		t.Fatalf("Relays = %v, %v", rs, err)
	}
	for _, key := range []string{"meshcast:nodes", "meshcast:claims", "meshcast:relays:live/show"} {
		if n, err := rdb.Exists(bg, key).Result(); err != nil || n != 0 {
			t.Errorf("EXISTS %s = %d, %v after pruning; want 0", key, n, err)
		}
	}
	if got, err := rdb.Get(bg, "meshcast:epoch:live/show").Result(); err != nil || got != epoch {
		t.Errorf("epoch after release = %q, %v; want %s", got, err, epoch)
	}

	// Once the counter expires, the name numbers from the store's clock
	// again: above every epoch it had.
	if err := rdb.Del(bg, "meshcast:epoch:live/show").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // the store's clock moves past c's
	c2 := mustClaim(t, reg, nameA, nodeA)
	if c2.Epoch <= c.Epoch {
		t.Errorf("claim after the counter expired: epoch %d, want above %d", c2.Epoch, c.Epoch)
	}

	// Another prefix is another registry on the same store.
	reg2, err := NewRedis(RedisConfig{URL: srv.URL(), Prefix: "other:", NodeTimeout: longTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer reg2.Close()
	c, err = reg2.Claim(bg, nameA, nodeB, "")
	if err != nil {
		t.Fatalf("Claim under another prefix: %v", err)
	}
	wantFirstEpoch(t, c)
	if n, err := rdb.Exists(bg, "other:claim:live/show").Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS other:claim:live/show = %d, %v", n, err)
	}
}

// TestRedisSharedStore runs two registries, as two nodes would, on one
// store: what one writes the other reads.
func TestRedisSharedStore(t *testing.T) {
	srv := testutil.StartRedis(t, 0)
	r1 := openRedis(t, srv.URL(), longTimeout, 0)
	r2 := openRedis(t, srv.URL(), longTimeout, 0)
	mustHeartbeat(t, r1, nodeA)
	mustHeartbeat(t, r2, nodeB)
	if ids := nodeIDs(t, r1); fmt.Sprint(ids) != "[node-a node-b]" {
		t.Fatalf("Nodes = %v", ids)
	}
	c := mustClaim(t, r1, nameA, nodeA)
	_, err := r2.Claim(bg, nameA, nodeB, "")
	wantErr(t, "Claim through the second client", err, ErrClaimed)
	wantOwner(t, r2, c)
}

// TestRedisUnavailable stops and restarts the store under a registry.
func TestRedisUnavailable(t *testing.T) {
	settleGoroutines(t)
	port := testutil.FreePort(t)
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)

	// A node starts while its store is down.
	reg := openRedis(t, url, longTimeout, 500*time.Millisecond)
	err := promptly(t, func() error { return reg.Heartbeat(bg, testNode(nodeA)) })
	wantErr(t, "Heartbeat with the store down", err, ErrUnavailable)
	t.Logf("with the store down: %v", err)
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q does not give the cause", err)
	}

	srv := testutil.StartRedis(t, port)
	eventually(t, "the store to come up", func() bool { return reg.Heartbeat(bg, testNode(nodeA)) == nil })
	c := mustClaim(t, reg, nameA, nodeA)
	if err := reg.SetRelay(bg, nameB, Relay{Node: nodeB, Upstream: nodeA}); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"Heartbeat", func() error { return reg.Heartbeat(bg, testNode(nodeA)) }},
		{"Leave", func() error { return reg.Leave(bg, nodeB) }},
		{"Nodes", func() error { _, err := reg.Nodes(bg); return err }},
		{"Node", func() error { _, err := reg.Node(bg, nodeA); return err }},
		{"Claim", func() error { _, err := reg.Claim(bg, nameB, nodeA, ""); return err }},
		{"Renew", func() error { return reg.Renew(bg, c) }},
		{"Release", func() error { return reg.Release(bg, c) }},
		{"Owner", func() error { _, err := reg.Owner(bg, nameA); return err }},
		{"Claims", func() error { _, err := reg.Claims(bg); return err }},
		{"SetRelay", func() error { return reg.SetRelay(bg, nameB, Relay{Node: nodeB, Upstream: nodeA}) }},
		{"DeleteRelay", func() error { return reg.DeleteRelay(bg, nameB, nodeB) }},
		{"Relays", func() error { _, err := reg.Relays(bg, nameB); return err }},
		{"Beat", func() error { _, err := reg.Beat(bg, beatOf(nodeA, []Claim{c}, nil)); return err }},
		{"Streams", func() error { _, err := reg.Streams(bg); return err }},
	} {
		wantErr(t, call.name+" with the store down", promptly(t, call.do), ErrUnavailable)
	}

	// The store comes back empty; the owner re-asserts its claim. Calls
	// may fail a little longer than the store is down: go-redis stops
	// dialing after repeated failures and probes again once a second,
	// for its command and pipeline pools separately. The node's loops
	// retry, as this one does.
	testutil.StartRedis(t, port)
	eventually(t, "the store to come back", func() bool {
		if err := reg.Heartbeat(bg, testNode(nodeA)); err != nil {
			wantErr(t, "Heartbeat while the store comes back", err, ErrUnavailable)
			return false
		}
		if err := reg.Renew(bg, c); err != nil {
			wantErr(t, "Renew after the store restarted", err, ErrUnavailable)
			return false
		}
		return true
	})
	wantOwner(t, reg, c)
	mustHeartbeat(t, reg, nodeB)
	_, err = reg.Claim(bg, nameA, nodeB, "")
	wantErr(t, "Claim by node-b after the re-assertion", err, ErrClaimed)
	if next := mustClaim(t, reg, nameA, nodeA); next.Epoch != c.Epoch+1 {
		t.Fatalf("epoch after the re-assertion = %d, want %d", next.Epoch, c.Epoch+1)
	}
}

// TestRedisOpTimeout: a store that takes connections but never answers
// fails calls after OpTimeout, and the caller's deadline also counts.
func TestRedisOpTimeout(t *testing.T) {
	settleGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	reg := openRedis(t, "redis://"+ln.Addr().String(), longTimeout, 300*time.Millisecond)
	wantErr(t, "Heartbeat to a silent store", promptly(t, func() error { return reg.Heartbeat(bg, testNode(nodeA)) }), ErrUnavailable)
	_, err = reg.Claim(bg, nameA, nodeA, "")
	wantErr(t, "Claim from a silent store", err, ErrUnavailable)

	ctx, cancel := context.WithCancel(bg)
	cancel()
	err = reg.Renew(ctx, Claim{Stream: nameA, Node: nodeA, Epoch: 1})
	wantErr(t, "Renew with a cancelled context", err, ErrUnavailable)
	wantErr(t, "Renew with a cancelled context", err, context.Canceled)
}

func TestRedisBadURL(t *testing.T) {
	for _, url := range []string{
		"",
		"localhost:6379",
		"127.0.0.1:6379",
		"http://127.0.0.1:6379",
		"unix:///tmp/redis.sock",
		"redis://",
		"redis://user:pass@",
		"redis://127.0.0.1:notaport",
		"redis://127.0.0.1:6379/notadb",
		"redis://127.0.0.1:6379/0/1",
		"redis://127.0.0.1:6379?bogus=1",
		"redis://127.0.0.1:6379?dial_timeout=soon",
		"redis://%zz:6379",
		"redis://h1:6379,,h2:6379",
		"redis://h1:6379,",
		"redis://h1:6379,h2:6379/3",
		"redis://s1:26379?master=",
		"redis://s1:26379,s2:x?master=mymaster",
	} {
		reg, err := NewRedis(RedisConfig{URL: url})
		if err == nil {
			reg.Close()
			t.Errorf("NewRedis(%q) succeeded", url)
			continue
		}
		if !strings.HasPrefix(err.Error(), "cluster: redis url: ") {
			t.Errorf("NewRedis(%q): error %q does not say what is wrong", url, err)
		}
	}

	// The password stays out of the message.
	_, err := NewRedis(RedisConfig{URL: "redis://user:s3cret@127.0.0.1:x/0"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v gives the password away", err)
	}
}

func TestRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url       string
		addrs     string
		master    string
		db        int
		user      string
		pass      string
		tlsServer string // "-": no TLS
		cluster   bool
	}{
		{url: "redis://127.0.0.1:6379", addrs: "[127.0.0.1:6379]", tlsServer: "-"},
		{url: "redis://redis.internal/2", addrs: "[redis.internal:6379]", db: 2, tlsServer: "-"},
		{url: "redis://u:p%40ss@h:7000/1", addrs: "[h:7000]", db: 1, user: "u", pass: "p@ss", tlsServer: "-"},
		{url: "redis://:pw@[::1]:6380", addrs: "[[::1]:6380]", pass: "pw", tlsServer: "-"},
		{url: "rediss://h.example:6380", addrs: "[h.example:6380]", tlsServer: "h.example"},
		{url: "redis://h1:7000,h2:7001,h3", addrs: "[h1:7000 h2:7001 h3:6379]", tlsServer: "-", cluster: true},
		{url: "rediss://u:p@h1:7000,h2:7001/0", addrs: "[h1:7000 h2:7001]", user: "u", pass: "p", tlsServer: "", cluster: true},
		{url: "redis://:pw@s1:5000,s2/3?master=mymaster", addrs: "[s1:5000 s2:26379]", master: "mymaster", db: 3, pass: "pw", tlsServer: "-"},
		{url: "redis://s1?master=m&dial_timeout=2s", addrs: "[s1:26379]", master: "m", tlsServer: "-"},
		{url: "rediss://s1:5000?master=m", addrs: "[s1:5000]", master: "m", tlsServer: ""},
	} {
		opts, err := RedisOptions(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		tlsServer := "-"
		if opts.TLSConfig != nil {
			tlsServer = opts.TLSConfig.ServerName
		}
		if fmt.Sprint(opts.Addrs) != tc.addrs || opts.MasterName != tc.master || opts.DB != tc.db ||
			opts.Username != tc.user || opts.Password != tc.pass || tlsServer != tc.tlsServer || isCluster(opts) != tc.cluster {
			t.Errorf("%s: addrs %v master %q db %d user %q pass %q tls %q cluster %v; want %s %q %d %q %q %q %v",
				tc.url, opts.Addrs, opts.MasterName, opts.DB, opts.Username, opts.Password, tlsServer, isCluster(opts),
				tc.addrs, tc.master, tc.db, tc.user, tc.pass, tc.tlsServer, tc.cluster)
		}
	}
	if opts, err := RedisOptions("redis://s1?master=m&dial_timeout=2s"); err != nil || opts.DialTimeout != 2*time.Second {
		t.Errorf("query options are lost: %+v, %v", opts, err)
	}

	// In Redis Cluster every key shares the prefix's hash tag, so the
	// scripts' keys live in one slot.
	for prefix, want := range map[string]string{"": "{meshcast:}", "mc:": "{mc:}", "{mc}:": "{mc}:"} {
		reg, err := NewRedis(RedisConfig{URL: "redis://127.0.0.1:1,127.0.0.1:2", Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if reg.prefix != want {
			t.Errorf("cluster prefix for %q = %q, want %q", prefix, reg.prefix, want)
		}
		reg.Close()
	}
	reg, err := NewRedis(RedisConfig{URL: "redis://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if reg.prefix != DefaultRedisPrefix || reg.timeout != DefaultNodeTimeout || reg.opTimeout != 2500*time.Millisecond {
		t.Errorf("defaults: prefix %q, node timeout %v, op timeout %v", reg.prefix, reg.timeout, reg.opTimeout)
	}
	for node, op := range map[time.Duration]time.Duration{time.Second: time.Second, 5 * time.Second: 2500 * time.Millisecond, time.Minute: 3 * time.Second} {
		if got := DefaultOpTimeout(node); got != op {
			t.Errorf("DefaultOpTimeout(%v) = %v, want %v", node, got, op)
		}
	}
}

// openRedis returns a Redis registry on url, closed when the test ends.
func openRedis(t *testing.T, url string, timeout, opTimeout time.Duration) *Redis {
	t.Helper()
	reg, err := NewRedis(RedisConfig{URL: url, NodeTimeout: timeout, OpTimeout: opTimeout})
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() {
		if err := reg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return reg
}

// promptly runs call, failing the test if it hangs: a registry call must
// return within its OpTimeout whatever the store does. The bound is loose;
// how quick the call is is not under test.
func promptly(t *testing.T, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("registry call hangs")
		return nil
	}
}

// settleGoroutines waits, when the test ends, for the goroutines go-redis
// leaves behind after a failed dial (a dial retry, a once-a-second probe of
// a store that is down) to notice the client was closed, so that the
// goroutine-leak check in TestMain sees only real leaks.
func settleGoroutines(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for goleak.Find(ignore) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// A registry behind sentinels outlives its master: once the sentinels
// promote the replica, the owner's renewal and a look-up reach it, and the
// claim is there, replicated or restored by the renewal.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	s := testutil.StartRedisSentinel(t)
	reg := openRedis(t, s.URL(), 5*time.Second, time.Second)
	alive := func() error { return reg.Heartbeat(bg, Node{ID: "node-a", State: StateServing}) }
	if err := alive(); err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	c, err := reg.Claim(bg, "live/failover", "node-a", "")
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	s.Master.Kill()
	testutil.WaitFor(t, 30*time.Second, "the registry to renew through the promoted replica", func() bool {
		return alive() == nil && reg.Renew(bg, c) == nil
	})
	got, err := reg.Owner(bg, "live/failover")
	if err != nil || got != c {
		t.Fatalf("Owner after failover = %+v, %v; want %+v", got, err, c)
	}
	if _, err := reg.Claim(bg, "live/failover", "node-b", ""); !errors.Is(err, ErrClaimed) {
		t.Fatalf("a second node's claim after failover: %v, want ErrClaimed", err)
	}
}

// roundTrips counts the commands and pipelines a go-redis client sends:
// each is one round trip to the store.
type roundTrips struct {
	mu   sync.Mutex
	cmds []string
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.cmds = append(h.cmds, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.cmds = append(h.cmds, fmt.Sprintf("pipeline of %d", len(cmds)))
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// take returns the round trips counted since the last take.
func (h *roundTrips) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.cmds
	h.cmds = nil
	return out
}

// A node's whole beat, the stream listing and the node listing are one
// round trip each, however many streams and relays there are: a store
// far away costs one round trip a second per node.
func TestRedisOneRoundTrip(t *testing.T) {
	srv := testutil.StartRedis(t, 0)
	reg := openRedis(t, srv.URL(), longTimeout, 0)
	trips := &roundTrips{}
	reg.client.AddHook(trips)
	mustHeartbeat(t, reg, nodeA, nodeB, nodeC)
	var claims []Claim
	relays := map[streamname.Name]NodeID{}
	for i := range 200 {
		name := streamname.Name(fmt.Sprintf("live/s%03d", i))
		claims = append(claims, mustClaim(t, reg, name, nodeA))
		relays[streamname.Name(fmt.Sprintf("live/r%03d", i))] = nodeB
		if err := reg.SetRelay(bg, name, Relay{Node: nodeC, Upstream: nodeA}); err != nil {
			t.Fatal(err)
		}
	}
	b := beatOf(nodeA, claims, relays)
	// The first run of a script may load it (NOSCRIPT, then EVAL).
	if _, err := reg.Beat(bg, b); err != nil {
		t.Fatal(err)
	}
	reg.Streams(bg)
	reg.Nodes(bg)
	reg.Relays(bg, "live/s000")
	trips.take()

	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"Beat of 200 claims, records and relays", func() error {
			lost, err := reg.Beat(bg, b)
			if len(lost) != 0 {
				t.Errorf("Beat lost %v", lost)
			}
			return err
		}},
		{"Streams of 200 streams with relays", func() error {
			s, err := reg.Streams(bg)
			if len(s) != 200 || len(s[199].Relays) != 1 || s[199].Info == nil {
				t.Errorf("Streams = %d streams", len(s))
			}
			return err
		}},
		{"Nodes", func() error { _, err := reg.Nodes(bg); return err }},
		{"Claims", func() error { _, err := reg.Claims(bg); return err }},
		{"StreamInfos", func() error { _, err := reg.StreamInfos(bg); return err }},
		{"Relays", func() error { _, err := reg.Relays(bg, "live/s000"); return err }},
	} {
		if err := call.do(); err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		if got := trips.take(); len(got) != 1 {
			t.Errorf("%s: %d round trips %v, want 1", call.name, len(got), got)
		}
	}
}

// Behind Sentinel, a master killed right after a claim must not take the
// claim's epoch with it: the promoted replica would hand the same epoch
// to the next claimant, and two nodes would hold one fencing token. The
// replica is frozen (SIGSTOP) so that it misses node-b's takeover, the
// master is killed, and node-c claims on the promoted replica: no epoch
// is ever held by two nodes, within one lease only the highest epoch's
// holder keeps the stream, and heartbeats and claims work on the promoted
// replica within 10 s of the kill.
func TestRedisSentinelEpochs(t *testing.T) {
	settleGoroutines(t) // the clients' dials to the killed master
	s := testutil.StartRedisSentinel(t)
	replica := redis.NewClient(&redis.Options{Addr: s.Replica.Addr()})
	defer replica.Close()
	testutil.WaitFor(t, 30*time.Second, "the replica's first copy of the master", func() bool {
		info, err := replica.Info(bg, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	// The master waits only for replicas it lists online: freezing one it
	// does not yet would let the takeover below through unreplicated.
	master := redis.NewClient(&redis.Options{Addr: s.Master.Addr()})
	defer master.Close()
	testutil.WaitFor(t, 30*time.Second, "the master to list its replica online", func() bool {
		info, err := master.Info(bg, "replication").Result()
		return err == nil && strings.Contains(info, "state=online")
	})
	const lease = 5 * time.Second
	rA := openRedis(t, s.URL(), lease, 2*time.Second)
	rB := openRedis(t, s.URL(), lease, 2*time.Second)
	rC := openRedis(t, s.URL(), lease, 2*time.Second)
	regs := map[NodeID]*Redis{nodeA: rA, nodeB: rB, nodeC: rC}
	for id, reg := range regs {
		mustHeartbeat(t, reg, id)
	}
	const name = streamname.Name("live/epochs")
	const cred = Credential("0123456789abcdef")
	var held []Claim // every claim a node was told it holds
	ca, err := rA.Claim(bg, name, nodeA, cred)
	if err != nil {
		t.Fatalf("Claim by node-a: %v", err)
	}
	held = append(held, ca)

	// The replica stalls; the publisher comes back on node-b with its
	// credential, a takeover the replica never sees.
	s.Replica.Freeze()
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			s.Replica.Thaw()
		}
	}
	t.Cleanup(thaw)
	start := time.Now()
	cb, err := rB.Claim(bg, name, nodeB, cred)
	took := time.Since(start)
	if err == nil {
		held = append(held, cb)
		t.Logf("node-b's takeover answered %v with epoch %d, unreplicated", took.Round(time.Millisecond), cb.Epoch)
	} else {
		t.Logf("node-b's takeover refused after %v: %v", took.Round(time.Millisecond), err)
	}
	wantErr(t, "a takeover no replica acknowledged", err, ErrUnavailable)

	s.Master.Kill()
	killed := time.Now()
	thaw()
	var beatBack, claimBack time.Duration
	testutil.WaitFor(t, 30*time.Second, "heartbeats on the promoted replica", func() bool {
		for id, reg := range regs {
			if reg.Heartbeat(bg, testNode(id)) != nil {
				return false
			}
		}
		return true
	})
	beatBack = time.Since(killed)
	// The publisher tries node-c next.
	var cc Claim
	testutil.WaitFor(t, 30*time.Second, "node-c's claim on the promoted replica", func() bool {
		cc, err = rC.Claim(bg, name, nodeC, cred)
		return err == nil
	})
	claimBack = time.Since(killed)
	held = append(held, cc)
	t.Logf("after the master's kill: heartbeats of all three nodes answered %v later, node-c's claim (epoch %d, node-a's %d) %v later",
		beatBack.Round(10*time.Millisecond), cc.Epoch, ca.Epoch, claimBack.Round(10*time.Millisecond))
	if beatBack > 10*time.Second || claimBack > 10*time.Second {
		t.Errorf("heartbeats back %v, claims back %v after the kill; want within 10 s", beatBack, claimBack)
	}

	// No epoch is held by two nodes.
	by := map[uint64]NodeID{}
	highest := held[0]
	for _, c := range held {
		if other, ok := by[c.Epoch]; ok && other != c.Node {
			t.Errorf("epoch %d held by %s and %s", c.Epoch, other, c.Node)
		}
		by[c.Epoch] = c.Node
		if c.Epoch > highest.Epoch {
			highest = c
		}
	}
	// Within one lease, every holder renews (as each node's next beat
	// does): the highest epoch keeps the stream, the others learn they
	// lost it.
	deadline := time.Now().Add(lease)
	for _, c := range held {
		err := regs[c.Node].Renew(bg, c)
		for errors.Is(err, ErrUnavailable) && time.Now().Before(deadline) {
			// A client still finding the new master, as a beat would.
			time.Sleep(100 * time.Millisecond)
			err = regs[c.Node].Renew(bg, c)
		}
		switch {
		case c == highest && err != nil:
			t.Errorf("renewal of the highest claim (%s, epoch %d): %v", c.Node, c.Epoch, err)
		case c != highest && !errors.Is(err, ErrLost):
			t.Errorf("renewal of %s's claim at epoch %d: %v, want ErrLost (the highest is %s's %d)", c.Node, c.Epoch, err, highest.Node, highest.Epoch)
		}
	}
	wantOwner(t, rC, Claim{Stream: name, Node: highest.Node, Epoch: highest.Epoch, Cred: cred})
}
