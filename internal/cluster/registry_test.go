package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/streamname"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial to stderr, and the Redis tests fail
	// dials on purpose: the errors they check say the same.
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Timeouts the suite runs with. shortTimeout is for tests that wait for something
// to expire; longTimeout is for tests where nothing may expire, leaving room for
// a loaded machine that is slow to send the next heartbeat.
const (
	shortTimeout = 400 * time.Millisecond
	longTimeout  = 3 * time.Second
)

// registryUnderTest makes the registries the conformance suite runs against.
type registryUnderTest struct {
	// open returns an empty registry whose nodes, claims and relays last
	// timeout.
	open func(t *testing.T, timeout time.Duration) Registry
	// wipe makes reg's store forget everything, epoch counters included,
	// as a Redis that restarted without persistence does.
	wipe func(t *testing.T, reg Registry)
}

func TestMemoryRegistry(t *testing.T) {
	t.Parallel()
	runRegistrySuite(t, registryUnderTest{
		open: func(t *testing.T, timeout time.Duration) Registry {
			return NewMemory(MemoryConfig{NodeTimeout: timeout})
		},
		wipe: func(t *testing.T, reg Registry) { reg.(*Memory).reset() },
	})
}

func TestMemoryDefaultTimeout(t *testing.T) {
	if got := NewMemory(MemoryConfig{}).timeout; got != DefaultNodeTimeout {
		t.Fatalf("timeout = %v, want DefaultNodeTimeout", got)
	}
}

// runRegistrySuite holds every Registry to the same contract.
func runRegistrySuite(t *testing.T, rt registryUnderTest) {
	tests := []struct {
		name string
		run  func(t *testing.T, rt registryUnderTest)
	}{
		{"HeartbeatMakesAlive", testHeartbeatMakesAlive},
		{"NodeExpires", testNodeExpires},
		{"Leave", testLeave},
		{"NodesSorted", testNodesSorted},
		{"ClaimFreeName", testClaimFreeName},
		{"ClaimRefusedWhileOwnerAlive", testClaimRefusedWhileOwnerAlive},
		{"TakeoverWhenOwnerDies", testTakeoverWhenOwnerDies},
		{"TakeoverWhenLeaseRunsOut", testTakeoverWhenLeaseRunsOut},
		{"SameNodeReclaim", testSameNodeReclaim},
		{"TakeoverWithCredential", testTakeoverWithCredential},
		{"EpochsIncrease", testEpochsIncrease},
		{"SupersededOwnerLoses", testSupersededOwnerLoses},
		{"RenewAfterLeaseRanOut", testRenewAfterLeaseRanOut},
		{"RenewReassertsAfterWipe", testRenewReassertsAfterWipe},
		{"OwnerAndClaims", testOwnerAndClaims},
		{"Relays", testRelays},
		{"StreamInfos", testStreamInfos},
		{"RelaysExpire", testRelaysExpire},
		{"Pushes", testPushes},
		{"ConcurrentClaims", testConcurrentClaims},
		{"BadArguments", testBadArguments},
		{"Beat", testBeat},
		{"BeatAfterWipe", testBeatAfterWipe},
		{"BeatExpires", testBeatExpires},
		{"Streams", testStreams},
		{"TimelineOutlivesRecordAndClaim", testTimelineOutlivesRecordAndClaim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, rt) })
	}
}

var (
	bg        = context.Background()
	nameA     = streamname.Name("live/show")
	nameB     = streamname.Name("live/other")
	nameC     = streamname.Name("app/third")
	nodeA     = NodeID("node-a")
	nodeB     = NodeID("node-b")
	nodeC     = NodeID("node-c")
	seenSlack = time.Minute // Seen must be at most this old
)

func testNode(id NodeID) Node {
	return Node{
		ID:            id,
		Region:        "eu-west",
		RTMPAddr:      "10.0.0.1:1935",
		HTTPAddr:      "10.0.0.1:8080",
		Capacity:      1000,
		State:         StateServing,
		Load:          Load{Viewers: 12, Streams: 2, EgressBPS: 3_000_000, CPU: 0.25},
		Started:       time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Version:       "v1.2.3-4-gabcdef0",
		StreamViewers: map[streamname.Name]map[string]int{nameA: {"rtmp": 10}, nameB: {"flv": 2}},
	}
}

func mustHeartbeat(t *testing.T, reg Registry, ids ...NodeID) {
	t.Helper()
	for _, id := range ids {
		if err := reg.Heartbeat(bg, testNode(id)); err != nil {
			t.Fatalf("Heartbeat(%s): %v", id, err)
		}
	}
}

func mustClaim(t *testing.T, reg Registry, name streamname.Name, id NodeID) Claim {
	t.Helper()
	c, err := reg.Claim(bg, name, id, "")
	if err != nil {
		t.Fatalf("Claim(%s, %s): %v", name, id, err)
	}
	if c.Stream != name || c.Node != id {
		t.Fatalf("Claim(%s, %s) = %+v", name, id, c)
	}
	return c
}

func nodeIDs(t *testing.T, reg Registry) []NodeID {
	t.Helper()
	nodes, err := reg.Nodes(bg)
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	ids := make([]NodeID, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	return ids
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func wantOwner(t *testing.T, reg Registry, want Claim) {
	t.Helper()
	got, err := reg.Owner(bg, want.Stream)
	if err != nil || got != want {
		t.Fatalf("Owner(%s) = %+v, %v; want %+v", want.Stream, got, err, want)
	}
}

// wantFirstEpoch checks that c is a name's first claim: its epoch is the
// store's clock in milliseconds (the store runs on this machine).
func wantFirstEpoch(t *testing.T, c Claim) {
	t.Helper()
	now := time.Now()
	if lo, hi := now.Add(-seenSlack).UnixMilli(), now.Add(seenSlack).UnixMilli(); c.Epoch < uint64(lo) || c.Epoch > uint64(hi) {
		t.Fatalf("first claim of %s: epoch %d, want the store's clock in ms (about %d)", c.Stream, c.Epoch, now.UnixMilli())
	}
}

// eventually polls cond until it holds. The deadline only catches a cond
// that never holds: how soon it holds is not under test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keepAlive heartbeats ids, and renews claims, every tick until the test
// ends or stop is called. Failures are reported when it stops.
func keepAlive(t *testing.T, reg Registry, ids []NodeID, claims ...Claim) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, id := range ids {
				if err := reg.Heartbeat(bg, testNode(id)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
			for _, c := range claims {
				if err := reg.Renew(bg, c); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(errs) > 0 {
				t.Errorf("keeping %v alive: %v", ids, errors.Join(errs...))
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testHeartbeatMakesAlive(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	if _, err := reg.Node(bg, nodeA); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Node before heartbeat: %v, want ErrNotFound", err)
	}
	if ids := nodeIDs(t, reg); len(ids) != 0 {
		t.Fatalf("Nodes of an empty registry = %v", ids)
	}
	before := time.Now()
	mustHeartbeat(t, reg, nodeA)
	got, err := reg.Node(bg, nodeA)
	if err != nil {
		t.Fatalf("Node: %v", err)
	}
	if got.Seen.IsZero() || got.Seen.Before(before.Add(-seenSlack)) || got.Seen.After(time.Now().Add(seenSlack)) {
		t.Errorf("Seen = %v, want about now (%v)", got.Seen, before)
	}
	want := testNode(nodeA)
	want.Seen = got.Seen
	if !got.Started.Equal(want.Started) {
		t.Errorf("Started = %v, want %v", got.Started, want.Started)
	}
	got.Started = want.Started
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Node = %+v\nwant   %+v", got, want)
	}

	// A heartbeat replaces the record.
	n := testNode(nodeA)
	n.State = StateDraining
	n.Load.Viewers = 99
	if err := reg.Heartbeat(bg, n); err != nil {
		t.Fatal(err)
	}
	got, err = reg.Node(bg, nodeA)
	if err != nil || got.State != StateDraining || got.Load.Viewers != 99 {
		t.Fatalf("Node after second heartbeat = %+v, %v", got, err)
	}
	nodes, err := reg.Nodes(bg)
	if err != nil || len(nodes) != 1 || nodes[0].ID != nodeA || nodes[0].State != StateDraining {
		t.Fatalf("Nodes = %+v, %v", nodes, err)
	}
}

func testNodeExpires(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	stop := keepAlive(t, reg, []NodeID{nodeB})
	defer stop()
	eventually(t, "node-a to expire", func() bool {
		_, err := reg.Node(bg, nodeA)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Node: %v", err)
		}
		return err != nil
	})
	if ids := nodeIDs(t, reg); fmt.Sprint(ids) != "[node-b]" {
		t.Fatalf("Nodes after node-a expired = %v, want [node-b]", ids)
	}
	if _, err := reg.Node(bg, nodeB); err != nil {
		t.Fatalf("Node(node-b), kept alive: %v", err)
	}
	// A heartbeat brings an expired node back.
	mustHeartbeat(t, reg, nodeA)
	if ids := nodeIDs(t, reg); fmt.Sprint(ids) != "[node-a node-b]" {
		t.Fatalf("Nodes = %v, want [node-a node-b]", ids)
	}
}

func testLeave(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	if err := reg.Leave(bg, nodeA); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	wantErr(t, "Node after Leave", func() error { _, err := reg.Node(bg, nodeA); return err }(), ErrNotFound)
	if ids := nodeIDs(t, reg); fmt.Sprint(ids) != "[node-b]" {
		t.Fatalf("Nodes after Leave = %v, want [node-b]", ids)
	}
	if err := reg.Leave(bg, "never-seen"); err != nil {
		t.Fatalf("Leave of an unknown node: %v", err)
	}
}

func testNodesSorted(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, "n3", "n10", "n1", "a", "n2")
	if ids := nodeIDs(t, reg); fmt.Sprint(ids) != "[a n1 n10 n2 n3]" {
		t.Fatalf("Nodes = %v, want sorted [a n1 n10 n2 n3]", ids)
	}
}

func testClaimFreeName(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA)
	wantErr(t, "Owner of an unclaimed name", func() error { _, err := reg.Owner(bg, nameA); return err }(), ErrNotFound)
	c := mustClaim(t, reg, nameA, nodeA)
	wantFirstEpoch(t, c)
	wantOwner(t, reg, c)
	if err := reg.Renew(bg, c); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	wantOwner(t, reg, c)
}

func testClaimRefusedWhileOwnerAlive(t *testing.T, rt registryUnderTest) {
	// short leases, so the owner only holds the name by renewing it.
	reg := rt.open(t, 500*time.Millisecond)
	mustHeartbeat(t, reg, nodeA, nodeB)
	c := mustClaim(t, reg, nameA, nodeA)
	stop := keepAlive(t, reg, []NodeID{nodeA, nodeB}, c)
	// Try for longer than a lease: only the renewals keep node-b out.
	for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		_, err := reg.Claim(bg, nameA, nodeB, "")
		wantErr(t, "Claim by node-b", err, ErrClaimed)
		if !strings.Contains(err.Error(), string(nodeA)) {
			t.Fatalf("ErrClaimed %q does not name the owner %s", err, nodeA)
		}
	}
	stop()
	wantOwner(t, reg, c)
}

func testTakeoverWhenOwnerDies(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	ca := mustClaim(t, reg, nameA, nodeA)
	_, err := reg.Claim(bg, nameA, nodeB, "")
	wantErr(t, "Claim by node-b while node-a is alive", err, ErrClaimed)

	// node-a stops heartbeating but keeps renewing its claim: what frees
	// the name is node-a's record expiring, not the lease.
	var cb Claim
	eventually(t, "node-b to take over from dead node-a", func() bool {
		mustHeartbeat(t, reg, nodeB)
		if err := reg.Renew(bg, ca); err != nil {
			t.Fatalf("Renew by node-a before the takeover: %v", err)
		}
		var err error
		cb, err = reg.Claim(bg, nameA, nodeB, "")
		if err != nil && !errors.Is(err, ErrClaimed) {
			t.Fatalf("Claim by node-b: %v", err)
		}
		return err == nil
	})
	if cb.Node != nodeB || cb.Epoch <= ca.Epoch {
		t.Fatalf("takeover claim %+v, want node-b above epoch %d", cb, ca.Epoch)
	}
	wantOwner(t, reg, cb)
	wantErr(t, "Renew by node-a after the takeover", reg.Renew(bg, ca), ErrLost)
	wantOwner(t, reg, cb)
}

func testTakeoverWithCredential(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	claimed := reg.Claimed(ctx)
	mustHeartbeat(t, reg, nodeA, nodeB)
	key := CredentialOf("cluster-secret", "key-digest")
	ca, err := reg.Claim(bg, nameA, nodeA, key)
	if err != nil || ca.Cred != key || ca.From != "" {
		t.Fatalf("Claim with a credential = %+v, %v", ca, err)
	}
	wantOwner(t, reg, ca)
	// Without the credential, or with another, the live owner keeps it.
	for _, cred := range []Credential{"", CredentialOf("cluster-secret", "other-digest"), CredentialOf("another-secret", "key-digest")} {
		_, err := reg.Claim(bg, nameA, nodeB, cred)
		wantErr(t, "Claim by node-b with credential "+string(cred), err, ErrClaimed)
	}
	// With it, node-b takes the claim over at once, at a higher epoch.
	cb, err := reg.Claim(bg, nameA, nodeB, key)
	if err != nil || cb.Node != nodeB || cb.Epoch <= ca.Epoch || cb.From != nodeA || cb.Cred != key {
		t.Fatalf("takeover with the credential = %+v, %v; want node-b above epoch %d, from node-a", cb, err, ca.Epoch)
	}
	cb.From = ""
	wantOwner(t, reg, cb)
	wantErr(t, "Renew by node-a after the takeover", reg.Renew(bg, ca), ErrLost)
	wantErr(t, "Release by node-a after the takeover", reg.Release(bg, ca), ErrLost)
	if err := reg.Renew(bg, cb); err != nil {
		t.Fatalf("Renew by node-b: %v", err)
	}
	// And back: the credential moves with the claim.
	ca2, err := reg.Claim(bg, nameA, nodeA, key)
	if err != nil || ca2.From != nodeB {
		t.Fatalf("takeover back by node-a = %+v, %v", ca2, err)
	}
	// Every claim was published, in order, takeovers naming their source.
	var got []Claim
	eventually(t, "the claims to be published", func() bool {
		for {
			select {
			case c := <-claimed:
				if c.Stream == nameA {
					got = append(got, c)
				}
				continue
			default:
			}
			return len(got) >= 3
		}
	})
	want := []Claim{ca, {Stream: nameA, Node: nodeB, Epoch: cb.Epoch, Cred: key, From: nodeA}, ca2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published claims %+v, want %+v", got, want)
	}
	cancel()
	for range claimed { // closed once ctx ends
	}
}

func testStreamInfos(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	a := StreamInfo{Node: nodeA, Info: json.RawMessage(`{"video":{"codec":"H264","width":1280},"bitrate_bps":2000000}`)}
	b := StreamInfo{Node: nodeB, Info: json.RawMessage(`{"audio":{"codec":"AAC"}}`)}
	for name, info := range map[streamname.Name]StreamInfo{nameA: a, nameB: b} {
		if err := reg.SetStreamInfo(bg, name, info); err != nil {
			t.Fatalf("SetStreamInfo(%s): %v", name, err)
		}
	}
	got, err := reg.StreamInfos(bg)
	if err != nil || len(got) != 2 || string(got[nameA].Info) != string(a.Info) || got[nameA].Node != nodeA ||
		string(got[nameB].Info) != string(b.Info) || got[nameB].Node != nodeB {
		t.Fatalf("StreamInfos = %+v, %v", got, err)
	}
	if err := reg.SetStreamInfo(bg, nameC, StreamInfo{Info: json.RawMessage(`{}`)}); err == nil {
		t.Error("SetStreamInfo without a node succeeded")
	}
	big := StreamInfo{Node: nodeA, Info: json.RawMessage(`"` + strings.Repeat("x", maxStreamInfo) + `"`)}
	if err := reg.SetStreamInfo(bg, nameC, big); err == nil {
		t.Error("SetStreamInfo of more than maxStreamInfo bytes succeeded")
	}
	// Records last one NodeTimeout unless set again.
	stop := make(chan struct{})
	kept := make(chan error, 1)
	go func() {
		tick := time.NewTicker(shortTimeout / 4)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				kept <- nil
				return
			case <-tick.C:
				if err := reg.SetStreamInfo(bg, nameA, a); err != nil {
					kept <- err
					return
				}
			}
		}
	}()
	eventually(t, "live/other's record to expire", func() bool {
		got, err := reg.StreamInfos(bg)
		return err == nil && len(got) == 1 && got[nameA].Node == nodeA
	})
	close(stop)
	if err := <-kept; err != nil {
		t.Fatalf("SetStreamInfo: %v", err)
	}
}

func testTakeoverWhenLeaseRunsOut(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	ca := mustClaim(t, reg, nameA, nodeA)
	// Both nodes stay alive, but node-a never renews.
	stop := keepAlive(t, reg, []NodeID{nodeA, nodeB})
	defer stop()
	var cb Claim
	eventually(t, "node-a's lease to run out", func() bool {
		var err error
		cb, err = reg.Claim(bg, nameA, nodeB, "")
		if err != nil && !errors.Is(err, ErrClaimed) {
			t.Fatalf("Claim by node-b: %v", err)
		}
		return err == nil
	})
	if cb.Epoch <= ca.Epoch {
		t.Fatalf("epoch after the lease ran out = %d, want above %d", cb.Epoch, ca.Epoch)
	}
	wantErr(t, "Renew of the lapsed claim", reg.Renew(bg, ca), ErrLost)
	wantErr(t, "Release of the lapsed claim", reg.Release(bg, ca), ErrLost)
	wantOwner(t, reg, cb)
}

func testSameNodeReclaim(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA)
	c1 := mustClaim(t, reg, nameA, nodeA)
	c2 := mustClaim(t, reg, nameA, nodeA)
	if c2.Epoch <= c1.Epoch {
		t.Fatalf("reclaim epoch %d, want above %d", c2.Epoch, c1.Epoch)
	}
	wantOwner(t, reg, c2)
	// The first claim is superseded, even by its own node.
	wantErr(t, "Renew of the older claim", reg.Renew(bg, c1), ErrLost)
	wantErr(t, "Release of the older claim", reg.Release(bg, c1), ErrLost)
	wantOwner(t, reg, c2)
}

func testEpochsIncrease(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	var last uint64
	for i := range 6 {
		id := []NodeID{nodeA, nodeB}[i%2]
		c := mustClaim(t, reg, nameA, id)
		if c.Epoch <= last {
			t.Fatalf("claim %d: epoch %d, want above %d", i, c.Epoch, last)
		}
		last = c.Epoch
		if err := reg.Release(bg, c); err != nil {
			t.Fatalf("Release: %v", err)
		}
		wantErr(t, "Owner after Release", func() error { _, err := reg.Owner(bg, nameA); return err }(), ErrNotFound)
		// A released claim is over: it can be neither renewed back nor
		// released twice once a newer one was taken.
		if i > 0 {
			continue
		}
		next := mustClaim(t, reg, nameA, nodeB)
		wantErr(t, "Renew of a released claim", reg.Renew(bg, c), ErrLost)
		if err := reg.Release(bg, next); err != nil {
			t.Fatal(err)
		}
		last = next.Epoch
	}
	// Epochs are per name.
	wantFirstEpoch(t, mustClaim(t, reg, nameB, nodeA))
}

func testSupersededOwnerLoses(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	ca := mustClaim(t, reg, nameA, nodeA)
	// node-a leaves (or crashed and its record went): node-b may take over
	// at once, without waiting for node-a's lease.
	if err := reg.Leave(bg, nodeA); err != nil {
		t.Fatal(err)
	}
	cb := mustClaim(t, reg, nameA, nodeB)
	if cb.Epoch <= ca.Epoch {
		t.Fatalf("takeover epoch %d, want above %d", cb.Epoch, ca.Epoch)
	}
	// node-a comes back, unaware.
	mustHeartbeat(t, reg, nodeA)
	wantErr(t, "Renew by the superseded owner", reg.Renew(bg, ca), ErrLost)
	wantErr(t, "Release by the superseded owner", reg.Release(bg, ca), ErrLost)
	wantOwner(t, reg, cb)
	_, err := reg.Claim(bg, nameA, nodeA, "")
	wantErr(t, "Claim by node-a while node-b owns the name", err, ErrClaimed)
	if err := reg.Renew(bg, cb); err != nil {
		t.Fatalf("Renew by the new owner: %v", err)
	}
	if err := reg.Release(bg, cb); err != nil {
		t.Fatalf("Release by the new owner: %v", err)
	}
	wantErr(t, "Owner after Release", func() error { _, err := reg.Owner(bg, nameA); return err }(), ErrNotFound)
}

func testRenewAfterLeaseRanOut(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA)
	c := mustClaim(t, reg, nameA, nodeA)
	eventually(t, "the lease to run out", func() bool {
		_, err := reg.Owner(bg, nameA)
		return errors.Is(err, ErrNotFound)
	})
	// Nobody claimed since: the owner may restore its claim...
	if err := reg.Renew(bg, c); err != nil {
		t.Fatalf("Renew after the lease ran out: %v", err)
	}
	wantOwner(t, reg, c)
	eventually(t, "the lease to run out again", func() bool {
		_, err := reg.Owner(bg, nameA)
		return errors.Is(err, ErrNotFound)
	})
	// ...or release it, which it already is.
	if err := reg.Release(bg, c); err != nil {
		t.Fatalf("Release after the lease ran out: %v", err)
	}
	// The next claim still numbers above it.
	mustHeartbeat(t, reg, nodeA)
	if next := mustClaim(t, reg, nameA, nodeA); next.Epoch <= c.Epoch {
		t.Fatalf("next epoch %d, want above %d", next.Epoch, c.Epoch)
	}
}

func testRenewReassertsAfterWipe(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	old := mustClaim(t, reg, nameA, nodeB) // superseded below
	if err := reg.Leave(bg, nodeB); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, reg, nameA, nodeA)
	ca := mustClaim(t, reg, nameA, nodeA)
	cOther := mustClaim(t, reg, nameB, nodeA)
	if ca.Epoch != old.Epoch+2 {
		t.Fatalf("epoch = %d, want %d", ca.Epoch, old.Epoch+2)
	}

	rt.wipe(t, reg)
	wantErr(t, "Owner after the wipe", func() error { _, err := reg.Owner(bg, nameA); return err }(), ErrNotFound)
	if ids := nodeIDs(t, reg); len(ids) != 0 {
		t.Fatalf("Nodes after the wipe = %v", ids)
	}

	// The owners re-assert what the store forgot, at their epochs.
	mustHeartbeat(t, reg, nodeA, nodeB)
	if err := reg.Renew(bg, ca); err != nil {
		t.Fatalf("Renew after the wipe: %v", err)
	}
	if err := reg.Renew(bg, cOther); err != nil {
		t.Fatalf("Renew of another name after the wipe: %v", err)
	}
	wantOwner(t, reg, ca)
	wantOwner(t, reg, cOther)

	// A lower epoch cannot take over.
	wantErr(t, "Renew of a lower epoch", reg.Renew(bg, old), ErrLost)
	wantErr(t, "Release of a lower epoch", reg.Release(bg, old), ErrLost)
	_, err := reg.Claim(bg, nameA, nodeB, "")
	wantErr(t, "Claim by node-b", err, ErrClaimed)
	wantOwner(t, reg, ca)

	// The counter was raised: the next claim numbers above the restored one.
	if next := mustClaim(t, reg, nameA, nodeA); next.Epoch != ca.Epoch+1 {
		t.Fatalf("claim after the re-assertion: epoch %d, want %d", next.Epoch, ca.Epoch+1)
	}
	// And the re-asserted claim is now superseded.
	wantErr(t, "Renew of the re-asserted claim after a reclaim", reg.Renew(bg, ca), ErrLost)

	// After another wipe, a superseded owner that renews first is
	// restored, but the newest owner's renewal displaces it: the highest
	// epoch wins, and the older one learns it lost.
	newest, _ := reg.Owner(bg, nameA)
	rt.wipe(t, reg)
	mustHeartbeat(t, reg, nodeA, nodeB)
	if err := reg.Renew(bg, old); err != nil {
		t.Fatalf("Renew of a superseded claim into an empty store: %v", err)
	}
	if err := reg.Renew(bg, newest); err != nil {
		t.Fatalf("Renew of the newest claim over an older restored one: %v", err)
	}
	wantOwner(t, reg, newest)
	wantErr(t, "Renew of the displaced older claim", reg.Renew(bg, old), ErrLost)
}

func testOwnerAndClaims(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	claims := func() string {
		t.Helper()
		cs, err := reg.Claims(bg)
		if err != nil {
			t.Fatalf("Claims: %v", err)
		}
		return fmt.Sprint(cs)
	}
	if got := claims(); got != "[]" {
		t.Fatalf("Claims of an empty registry = %s", got)
	}
	mustHeartbeat(t, reg, nodeA, nodeB)
	c1 := mustClaim(t, reg, nameA, nodeA)
	c2 := mustClaim(t, reg, nameB, nodeB)
	c3 := mustClaim(t, reg, nameC, nodeA)
	wantOwner(t, reg, c1)
	wantOwner(t, reg, c2)
	wantOwner(t, reg, c3)
	want := fmt.Sprint([]Claim{c3, c2, c1}) // app/third, live/other, live/show
	if got := claims(); got != want {
		t.Fatalf("Claims = %s, want %s", got, want)
	}

	if err := reg.Release(bg, c2); err != nil {
		t.Fatal(err)
	}
	if got, want := claims(), fmt.Sprint([]Claim{c3, c1}); got != want {
		t.Fatalf("Claims after Release = %s, want %s", got, want)
	}

	// Only the renewed claim outlives its lease.
	stop := keepAlive(t, reg, []NodeID{nodeA, nodeB}, c1)
	defer stop()
	want = fmt.Sprint([]Claim{c1})
	eventually(t, "app/third's lease to run out", func() bool { return claims() == want })
	wantErr(t, "Owner of an expired claim", func() error { _, err := reg.Owner(bg, nameC); return err }(), ErrNotFound)
	wantOwner(t, reg, c1)
}

func testRelays(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	relays := func(name streamname.Name) string {
		t.Helper()
		rs, err := reg.Relays(bg, name)
		if err != nil {
			t.Fatalf("Relays(%s): %v", name, err)
		}
		return fmt.Sprint(rs)
	}
	if got := relays(nameA); got != "[]" {
		t.Fatalf("Relays of an unrelayed stream = %s", got)
	}
	mustHeartbeat(t, reg, nodeA, nodeB, nodeC)
	set := func(name streamname.Name, r Relay) {
		t.Helper()
		if err := reg.SetRelay(bg, name, r); err != nil {
			t.Fatalf("SetRelay(%s, %+v): %v", name, r, err)
		}
	}
	set(nameA, Relay{Node: nodeC, Upstream: nodeA})
	set(nameA, Relay{Node: nodeB, Upstream: nodeA})
	set(nameB, Relay{Node: nodeA, Upstream: nodeB})
	if got, want := relays(nameA), "[{node-b node-a} {node-c node-a}]"; got != want {
		t.Fatalf("Relays = %s, want %s", got, want)
	}
	if got, want := relays(nameB), "[{node-a node-b}]"; got != want {
		t.Fatalf("Relays(other) = %s, want %s", got, want)
	}
	// The relay of a node without a record (dead, or never alive) is
	// not listed.
	set(nameB, Relay{Node: "node-gone", Upstream: nodeB})
	if got, want := relays(nameB), "[{node-a node-b}]"; got != want {
		t.Fatalf("Relays with a dead node's = %s, want %s", got, want)
	}

	// Setting again replaces the upstream.
	set(nameA, Relay{Node: nodeC, Upstream: nodeB})
	if got, want := relays(nameA), "[{node-b node-a} {node-c node-b}]"; got != want {
		t.Fatalf("Relays after a change of upstream = %s, want %s", got, want)
	}

	if err := reg.DeleteRelay(bg, nameA, nodeB); err != nil {
		t.Fatalf("DeleteRelay: %v", err)
	}
	if got, want := relays(nameA), "[{node-c node-b}]"; got != want {
		t.Fatalf("Relays after DeleteRelay = %s, want %s", got, want)
	}
	if err := reg.DeleteRelay(bg, nameA, nodeB); err != nil {
		t.Fatalf("DeleteRelay of a deleted relay: %v", err)
	}
	if err := reg.DeleteRelay(bg, nameA, nodeC); err != nil {
		t.Fatal(err)
	}
	if got := relays(nameA); got != "[]" {
		t.Fatalf("Relays after deleting all = %s", got)
	}
	if got, want := relays(nameB), "[{node-a node-b}]"; got != want {
		t.Fatalf("Relays(other) = %s, want %s", got, want)
	}
}

// A relay record counts while its node is alive, and lasts RelayLife node
// timeouts unless written again.
func testRelaysExpire(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB, nodeC)
	written := time.Now()
	for _, id := range []NodeID{nodeA, nodeB, nodeC} {
		if err := reg.SetRelay(bg, nameA, Relay{Node: id, Upstream: "origin"}); err != nil {
			t.Fatal(err)
		}
	}
	relays := func() string {
		rs, err := reg.Relays(bg, nameA)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(rs)
	}
	// Only node-b stays alive: the others' relays go with their nodes,
	// long before their records expire.
	eventually(t, "node-a's and node-c's relays to go with their nodes", func() bool {
		mustHeartbeat(t, reg, nodeB)
		return relays() == "[{node-b origin}]"
	})
	if d := time.Since(written); d >= RelayLife*shortTimeout {
		t.Errorf("dead nodes' relays listed for %v, want gone with the node (%v)", d, shortTimeout)
	}
	// node-b's record, never written again, ends after RelayLife timeouts
	// though node-b lives.
	eventually(t, "node-b's relay to expire", func() bool {
		mustHeartbeat(t, reg, nodeB)
		return relays() == "[]"
	})
	if d := time.Since(written); d < RelayLife*shortTimeout-50*time.Millisecond {
		t.Errorf("node-b's relay expired after %v, want %d node timeouts (%v)", d, RelayLife, RelayLife*shortTimeout)
	}
}

func testConcurrentClaims(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	const n = 20
	ids := make([]NodeID, n)
	for i := range ids {
		ids[i] = NodeID(fmt.Sprintf("node-%02d", i))
		mustHeartbeat(t, reg, ids[i])
	}
	start := make(chan struct{})
	results := make([]Claim, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = reg.Claim(bg, nameA, ids[i], "")
		})
	}
	close(start)
	wg.Wait()
	var winners []Claim
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, results[i])
		case !errors.Is(err, ErrClaimed):
			t.Errorf("Claim by %s: %v", ids[i], err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d claims won, want exactly 1: %v", len(winners), winners)
	}
	wantFirstEpoch(t, winners[0])
	wantOwner(t, reg, winners[0])
}

func testBadArguments(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	if err := reg.Heartbeat(bg, Node{}); err == nil {
		t.Error("Heartbeat of a node without an ID succeeded")
	}
	if _, err := reg.Claim(bg, nameA, "", ""); err == nil {
		t.Error("Claim without a node succeeded")
	}
	if err := reg.SetRelay(bg, nameA, Relay{Upstream: nodeA}); err == nil {
		t.Error("SetRelay without a node succeeded")
	}
	// Epochs start at 1: no registry handed out epoch 0, so a claim of it
	// cannot be restored, not even on an empty store.
	wantErr(t, "Renew at epoch 0", reg.Renew(bg, Claim{Stream: nameA, Node: nodeA}), ErrLost)
	wantErr(t, "Release at epoch 0", reg.Release(bg, Claim{Stream: nameA, Node: nodeA}), ErrLost)
	wantErr(t, "Owner after the bad calls", func() error { _, err := reg.Owner(bg, nameA); return err }(), ErrNotFound)
}

// beatOf is node id's beat holding claims, a stream record for each, and
// relays.
func beatOf(id NodeID, claims []Claim, relays map[streamname.Name]NodeID) BeatRecord {
	b := BeatRecord{Node: testNode(id), Claims: claims, Relays: relays, StreamInfos: map[streamname.Name]StreamInfo{}}
	for _, c := range claims {
		b.StreamInfos[c.Stream] = StreamInfo{Node: id, Info: json.RawMessage(`{"by":"` + string(id) + `"}`)}
	}
	return b
}

// A beat heartbeats, renews every claim, records each stream renewed and
// each relay, and reports a superseded claim as lost, as Renew does.
func testBeat(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB)
	ca := mustClaim(t, reg, nameA, nodeA)
	old := mustClaim(t, reg, nameB, nodeA)
	// node-a goes away for a while; node-b takes nameB over.
	if err := reg.Leave(bg, nodeA); err != nil {
		t.Fatal(err)
	}
	cb := mustClaim(t, reg, nameB, nodeB)

	lost, err := reg.Beat(bg, beatOf(nodeA, []Claim{ca, old}, map[streamname.Name]NodeID{nameC: nodeB}))
	if err != nil {
		t.Fatalf("Beat: %v", err)
	}
	if fmt.Sprint(lost) != fmt.Sprint([]Claim{old}) {
		t.Fatalf("Beat lost %+v, want the superseded claim %+v", lost, old)
	}
	wantErr(t, "Renew of the claim Beat reported lost", reg.Renew(bg, old), ErrLost)
	if n, err := reg.Node(bg, nodeA); err != nil || n.ID != nodeA || n.Load != testNode(nodeA).Load {
		t.Fatalf("Node after Beat = %+v, %v", n, err)
	}
	wantOwner(t, reg, ca)
	wantOwner(t, reg, cb)
	infos, err := reg.StreamInfos(bg)
	if err != nil || len(infos) != 1 || infos[nameA].Node != nodeA || string(infos[nameA].Info) != `{"by":"node-a"}` {
		t.Fatalf("StreamInfos after Beat = %+v, %v; want node-a's record of %s only", infos, err, nameA)
	}
	if rs, err := reg.Relays(bg, nameC); err != nil || fmt.Sprint(rs) != "[{node-a node-b}]" {
		t.Fatalf("Relays after Beat = %v, %v", rs, err)
	}

	// A beat without claims or relays is a heartbeat; one with many
	// renews them all.
	if lost, err := reg.Beat(bg, BeatRecord{Node: testNode(nodeC)}); err != nil || len(lost) != 0 {
		t.Fatalf("bare Beat = %v, %v", lost, err)
	}
	if ids := nodeIDs(t, reg); fmt.Sprint(ids) != "[node-a node-b node-c]" {
		t.Fatalf("Nodes = %v", ids)
	}
	var many []Claim
	relays := map[streamname.Name]NodeID{}
	for i := range 50 {
		name := streamname.Name(fmt.Sprintf("many/s%02d", i))
		many = append(many, mustClaim(t, reg, name, nodeC))
		relays[streamname.Name(fmt.Sprintf("many/r%02d", i))] = nodeA
	}
	if lost, err := reg.Beat(bg, beatOf(nodeC, many, relays)); err != nil || len(lost) != 0 {
		t.Fatalf("Beat of 50 claims and 50 relays = %v, %v", lost, err)
	}
	for _, c := range many {
		wantOwner(t, reg, c)
	}
	if rs, err := reg.Relays(bg, "many/r49"); err != nil || fmt.Sprint(rs) != "[{node-c node-a}]" {
		t.Fatalf("Relays after the big Beat = %v, %v", rs, err)
	}

	// What no node could send is refused, and nothing of it written.
	for what, b := range map[string]BeatRecord{
		"without a node":                {Claims: []Claim{ca}},
		"with another node's claim":     {Node: testNode(nodeB), Claims: []Claim{ca}},
		"with a claim at epoch 0":       {Node: testNode(nodeA), Claims: []Claim{{Stream: nameA, Node: nodeA}}},
		"with another node's record":    {Node: testNode(nodeA), Claims: []Claim{ca}, StreamInfos: map[streamname.Name]StreamInfo{nameA: {Node: nodeB}}},
		"with a relay without upstream": {Node: testNode(nodeA), Relays: map[streamname.Name]NodeID{nameA: ""}},
	} {
		if _, err := reg.Beat(bg, b); err == nil {
			t.Errorf("Beat %s succeeded", what)
		}
	}
}

// After the store lost everything (a Redis restarted empty), one beat
// puts back the node, its claims at their epochs, its stream records and
// its relays.
func testBeatAfterWipe(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	mustHeartbeat(t, reg, nodeA)
	ca := mustClaim(t, reg, nameA, nodeA)
	cb := mustClaim(t, reg, nameB, nodeA)
	rt.wipe(t, reg)
	if ids := nodeIDs(t, reg); len(ids) != 0 {
		t.Fatalf("Nodes after the wipe = %v", ids)
	}
	lost, err := reg.Beat(bg, beatOf(nodeA, []Claim{ca, cb}, map[streamname.Name]NodeID{nameC: nodeB}))
	if err != nil || len(lost) != 0 {
		t.Fatalf("Beat after the wipe = %v, %v; want every claim restored", lost, err)
	}
	if ids := nodeIDs(t, reg); fmt.Sprint(ids) != "[node-a]" {
		t.Fatalf("Nodes after the beat = %v", ids)
	}
	wantOwner(t, reg, ca)
	wantOwner(t, reg, cb)
	streams, err := reg.Streams(bg)
	if err != nil || len(streams) != 2 || streams[0].Info == nil || streams[1].Info == nil {
		t.Fatalf("Streams after the beat = %+v, %v", streams, err)
	}
	if rs, err := reg.Relays(bg, nameC); err != nil || fmt.Sprint(rs) != "[{node-a node-b}]" {
		t.Fatalf("Relays after the beat = %v, %v", rs, err)
	}
	// The counters were raised: the next claim numbers above.
	mustHeartbeat(t, reg, nodeB)
	if err := reg.Leave(bg, nodeA); err != nil {
		t.Fatal(err)
	}
	if next := mustClaim(t, reg, nameA, nodeB); next.Epoch != ca.Epoch+1 {
		t.Fatalf("claim after the restoring beat: epoch %d, want %d", next.Epoch, ca.Epoch+1)
	}
}

// What a beat writes lasts one NodeTimeout unless beaten again.
func testBeatExpires(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA)
	ca := mustClaim(t, reg, nameA, nodeA)
	if _, err := reg.Beat(bg, beatOf(nodeA, []Claim{ca}, map[streamname.Name]NodeID{nameB: nodeC})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the beat's records to expire", func() bool {
		streams, err := reg.Streams(bg)
		rs, err2 := reg.Relays(bg, nameB)
		return err == nil && err2 == nil && len(streams) == 0 && len(rs) == 0 && len(nodeIDs(t, reg)) == 0
	})
}

// Streams lists every current claim with its owner's record and relays.
func testStreams(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, longTimeout)
	if got, err := reg.Streams(bg); err != nil || len(got) != 0 {
		t.Fatalf("Streams of an empty registry = %+v, %v", got, err)
	}
	mustHeartbeat(t, reg, nodeA, nodeB, nodeC)
	ca := mustClaim(t, reg, nameA, nodeA)
	cb := mustClaim(t, reg, nameB, nodeB)
	info := StreamInfo{Node: nodeA, Info: json.RawMessage(`{"video":{"codec":"H264"}}`)}
	if err := reg.SetStreamInfo(bg, nameA, info); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Relay{{Node: nodeC, Upstream: nodeA}, {Node: nodeB, Upstream: nodeA}} {
		if err := reg.SetRelay(bg, nameA, r); err != nil {
			t.Fatal(err)
		}
	}
	// A relay of a stream nobody claims is not a stream of the listing.
	if err := reg.SetRelay(bg, nameC, Relay{Node: nodeA, Upstream: nodeB}); err != nil {
		t.Fatal(err)
	}
	got, err := reg.Streams(bg)
	if err != nil || len(got) != 2 {
		t.Fatalf("Streams = %+v, %v", got, err)
	}
	// Sorted by name: live/other (nameB) before live/show (nameA).
	b, a := got[0], got[1]
	if b.Claim != cb || b.Info != nil || len(b.Relays) != 0 {
		t.Errorf("Streams[0] = %+v, want %+v without a record or relays", b, cb)
	}
	if a.Claim != ca || a.Info == nil || a.Info.Node != nodeA || string(a.Info.Info) != string(info.Info) ||
		fmt.Sprint(a.Relays) != "[{node-b node-a} {node-c node-a}]" {
		t.Errorf("Streams[1] = %+v (info %+v), want %+v with node-a's record and two relays", a, a.Info, ca)
	}
	if err := reg.Release(bg, cb); err != nil {
		t.Fatal(err)
	}
	if got, err := reg.Streams(bg); err != nil || len(got) != 1 || got[0].Claim != ca {
		t.Fatalf("Streams after a release = %+v, %v", got, err)
	}
}

// A stream record's timeline comes back in the answer of the stream's next
// claim, by whichever node, after the record and the claim are gone; a
// beat of a lost claim writes none, and a stream never recorded has none.
func testTimelineOutlivesRecordAndClaim(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	mustHeartbeat(t, reg, nodeA, nodeB, nodeC)
	ca := mustClaim(t, reg, nameA, nodeA)
	if ca.Prior != nil {
		t.Fatalf("first claim's Prior = %+v, want none", *ca.Prior)
	}
	seen := Timeline{DTS: 8_589_934_592 + 1234, At: 1_767_000_000_123}
	b := beatOf(nodeA, []Claim{ca}, nil)
	info := b.StreamInfos[nameA]
	info.Timeline = &seen
	b.StreamInfos[nameA] = info
	if lost, err := reg.Beat(bg, b); err != nil || len(lost) != 0 {
		t.Fatalf("Beat = %v, %v", lost, err)
	}
	recs, err := reg.Streams(bg)
	if err != nil || len(recs) != 1 || recs[0].Info == nil || recs[0].Info.Timeline == nil || *recs[0].Info.Timeline != seen {
		t.Fatalf("Streams = %+v, %v; want the record with its timeline %+v", recs, err, seen)
	}

	// node-a releases and leaves; its record expires.
	if err := reg.Release(bg, ca); err != nil {
		t.Fatal(err)
	}
	if err := reg.Leave(bg, nodeA); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-a's record to expire", func() bool {
		infos, err := reg.StreamInfos(bg)
		return err == nil && len(infos) == 0
	})
	mustHeartbeat(t, reg, nodeB, nodeC)
	cb := mustClaim(t, reg, nameA, nodeB)
	if cb.Prior == nil || *cb.Prior != seen {
		t.Fatalf("node-b's claim Prior = %v, want node-a's timeline %+v", cb.Prior, seen)
	}

	// node-a's stale beat is refused whole for that claim: its timeline
	// is not written over node-b's.
	mine := Timeline{DTS: 42, At: seen.At + 5000}
	b = beatOf(nodeB, []Claim{cb}, nil)
	info = b.StreamInfos[nameA]
	info.Timeline = &mine
	b.StreamInfos[nameA] = info
	if lost, err := reg.Beat(bg, b); err != nil || len(lost) != 0 {
		t.Fatalf("node-b's Beat = %v, %v", lost, err)
	}
	stale := beatOf(nodeA, []Claim{ca}, nil)
	info = stale.StreamInfos[nameA]
	info.Timeline = &Timeline{DTS: 999, At: 999}
	stale.StreamInfos[nameA] = info
	if lost, err := reg.Beat(bg, stale); err != nil || len(lost) != 1 {
		t.Fatalf("node-a's stale Beat = %v, %v; want its claim lost", lost, err)
	}
	if err := reg.Release(bg, cb); err != nil {
		t.Fatal(err)
	}
	mustHeartbeat(t, reg, nodeC)
	if cc := mustClaim(t, reg, nameA, nodeC); cc.Prior == nil || *cc.Prior != mine {
		t.Fatalf("node-c's claim Prior = %v, want node-b's timeline %+v", cc.Prior, mine)
	}

	// SetStreamInfo keeps a timeline too; a stream never recorded has none.
	set := Timeline{DTS: 7, At: 8}
	if err := reg.SetStreamInfo(bg, nameB, StreamInfo{Node: nodeA, Info: json.RawMessage(`{}`), Timeline: &set}); err != nil {
		t.Fatal(err)
	}
	if c := mustClaim(t, reg, nameB, nodeC); c.Prior == nil || *c.Prior != set {
		t.Fatalf("claim after SetStreamInfo: Prior = %v, want %+v", c.Prior, set)
	}
	if c := mustClaim(t, reg, nameC, nodeC); c.Prior != nil {
		t.Fatalf("claim of a stream never recorded: Prior = %+v, want none", *c.Prior)
	}
}
