package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/streamname"
)

// heartbeatEvery is how often a member heartbeats and renews its claims,
// unless MemberConfig.Every says otherwise.
const heartbeatEvery = time.Second

// Peers a member tells apart from a partition.
const (
	// peersEvery is how often a member lists the registry's nodes to
	// know its peers, or every node timeout while it knows none.
	peersEvery = 30 * time.Second
	// probePeers is how many known peers a member cut off from the
	// registry asks at a time whether they answer.
	probePeers = 3
)

// HeartbeatEvery is how often a member of a registry whose node timeout is
// timeout should beat: every second, or three times a timeout when that is
// shorter, so that one late or lost beat never lets a live node's record
// or claims expire.
func HeartbeatEvery(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return heartbeatEvery
	}
	return min(heartbeatEvery, timeout/3)
}

// MemberConfig configures a Member.
type MemberConfig struct {
	// Self is this node's record; Seen, State and Load are filled in.
	Self Node
	// Registry is the cluster's registry.
	Registry Registry
	// Secret is the cluster secret, under which claims keep publishers'
	// credentials (CredentialOf).
	Secret string
	// Load reports the node's live load for each heartbeat; nil sends none.
	Load func() Load
	// Relays reports the streams this node relays now, written to the
	// registry with the next heartbeat when new or moved to another
	// upstream, and again once RelayRefresh; nil means none.
	Relays func() map[streamname.Name]NodeID
	// StreamInfo describes a stream this node owns for the registry's
	// stream records (StreamInfo.Info), written with each renewal; nil,
	// or a nil answer, writes none.
	StreamInfo func(streamname.Name) json.RawMessage
	// Timeline reports where the timestamps of a stream this node owns
	// stand, written with its record (StreamInfo.Timeline) so that the
	// stream's next owner continues them (Claim returns them); nil, or a
	// nil answer, writes none.
	Timeline func(streamname.Name) *Timeline
	// StreamViewers reports this node's viewers per stream for its
	// heartbeat (Node.StreamViewers); nil sends none.
	StreamViewers func() map[streamname.Name]map[string]int
	// OnLost is called, from the member's goroutine, for a stream whose
	// claim another node has taken: the node must stop serving it.
	OnLost func(streamname.Name)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock times heartbeats. Defaults to clock.Real.
	Clock clock.Clock
	// Every is how often the member beats. Defaults to 1s; see
	// HeartbeatEvery.
	Every time.Duration
	// NodeTimeout is the registry's node timeout, which sets how often an
	// unchanged relay's record is written again (RelayRefresh). Defaults
	// to three beats, which a registry's timeout is never under when
	// Every is HeartbeatEvery of it. It is also the lease: a member that
	// reaches neither the registry nor any known peer for this long gives
	// up its claims (see Member).
	NodeTimeout time.Duration
	// Reach reports whether peer n answers, while the registry cannot be
	// reached. Defaults to a GET of the peer's /readyz within a quarter of
	// NodeTimeout (at most 1s): any answer counts.
	Reach func(ctx context.Context, n Node) error
}

// Member keeps this node in the registry: it heartbeats every second with
// the node's load, renews the claims of the streams published here and the
// records of the streams relayed here, and re-asserts all of them when the
// registry comes back after an outage. Nothing it does blocks media.
//
// A member that reaches neither the registry nor any of its known peers
// (the nodes of its last listing) for one lease is cut off: meanwhile
// another node may have claimed its streams, so it stops serving them
// (OnLost) and forgets its claims; back in touch, it claims anew. A
// member that knows no peer (a single node) keeps serving through a
// registry outage, as does one whose peers answer (the registry is away
// for everyone).
type Member struct {
	cfg MemberConfig
	log *slog.Logger

	mu        sync.Mutex
	claims    map[streamname.Name]Claim
	draining  bool
	reachable bool // the last call to the registry succeeded
	// beatMu makes beats one at a time (the ticker's and Drain's), and
	// guards relaysWritten: each relay's record as the registry last took
	// it, and when.
	beatMu        sync.Mutex
	relaysWritten map[streamname.Name]relayWrite
	// peers are the other nodes of the last listing, listed at peersAt;
	// contact is the latest of the last beat the registry took (when it
	// was sent) and the last probe a peer answered (when it was sent);
	// cutOff is set once the claims were given up for want of contact.
	peers   []Node
	peersAt time.Time
	contact time.Time
	cutOff  bool
	failed  chan struct{} // capacity 1: a beat failed

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type relayWrite struct {
	upstream NodeID
	at       time.Time
}

// NewMember creates a member; Start begins its heartbeat.
func NewMember(cfg MemberConfig) *Member {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Every <= 0 {
		cfg.Every = heartbeatEvery
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = 3 * cfg.Every
	}
	if cfg.Reach == nil {
		cfg.Reach = reachReadyz(min(time.Second, cfg.NodeTimeout/4))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Member{
		cfg:           cfg,
		log:           cfg.Logger.With("component", "cluster", "node", cfg.Self.ID),
		claims:        make(map[streamname.Name]Claim),
		reachable:     true,
		relaysWritten: make(map[streamname.Name]relayWrite),
		contact:       cfg.Clock.Monotonic(),
		failed:        make(chan struct{}, 1),
		ctx:           ctx,
		cancel:        cancel,
	}
}

// reachReadyz asks a peer's /readyz, within timeout, on a connection of
// its own: any HTTP answer (503 from a draining node too) is contact.
func reachReadyz(timeout time.Duration) func(context.Context, Node) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context, n Node) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
}

// ID returns this node's ID.
func (m *Member) ID() NodeID { return m.cfg.Self.ID }

// Start sends the first heartbeat and keeps heartbeating until Close. A
// registry that cannot be reached is logged, not fatal: the node serves
// what it has and joins when the registry answers. It also watches the
// registry's claims, so a claim another node takes over is given up at
// once rather than at the next renewal.
func (m *Member) Start() {
	claimed := m.cfg.Registry.Claimed(m.ctx)
	m.wg.Go(func() {
		for c := range claimed {
			if c.Node != m.cfg.Self.ID {
				m.lose(c.Stream, c.Epoch, c.Node)
			}
		}
	})
	m.wg.Go(m.watchContact)
	m.beat()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := m.cfg.Clock.NewTicker(m.cfg.Every)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C():
				m.beat()
			}
		}
	}()
}

// Close stops heartbeating, gives up this node's claims and leaves the
// registry, each within the registry's own timeouts.
func (m *Member) Close() {
	m.mu.Lock()
	m.cancel() // under mu: Drain adds no beat once this is done
	m.mu.Unlock()
	m.wg.Wait()
	// One deadline for all: a registry out of reach must not hold up the
	// node's exit by a timeout per claim. Claims not released lapse with
	// their lease.
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	m.mu.Lock()
	claims := m.claims
	m.claims = map[streamname.Name]Claim{}
	m.mu.Unlock()
	for _, c := range claims {
		m.cfg.Registry.Release(ctx, c)
	}
	m.cfg.Registry.Leave(ctx, m.cfg.Self.ID)
}

// Drain marks the node draining in the registry: at once, in a beat it
// waits for at most drainWait (a registry out of reach, or slow, must not
// hold up a node's shutdown; Close ends that beat), and in every
// heartbeat from then on.
func (m *Member) Drain() {
	done := make(chan struct{})
	m.mu.Lock()
	m.draining = true
	if m.ctx.Err() != nil {
		m.mu.Unlock()
		return // closed
	}
	m.wg.Go(func() { defer close(done); m.beat() })
	m.mu.Unlock()
	t := time.NewTimer(drainWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		m.log.Warn("the registry has not heard yet that this node drains; shutting down regardless", "waited", drainWait)
	}
}

// How long a closing member waits for the registry: Drain for its beat,
// Close for its claims' release and its leave, all told.
const (
	drainWait    = time.Second
	leaveTimeout = 3 * time.Second
)

// Claim makes this node the owner of name (see Registry.Claim) and keeps
// the claim renewed until release is called. presented is the
// publisher's credential digest (empty for none): another node's
// publisher presenting the same takes the claim over at once. prior is
// the stream's last timeline in the registry, which the stream
// continues here; nil when the registry kept none (the stream starts a
// timeline of its own). It is read with the claim, in the same call.
func (m *Member) Claim(name streamname.Name, presented string) (release func(), prior *Timeline, err error) {
	c, err := m.cfg.Registry.Claim(m.ctx, name, m.cfg.Self.ID, CredentialOf(m.cfg.Secret, presented))
	if err != nil {
		return nil, nil, err
	}
	from, prior := c.From, c.Prior
	c.From, c.Prior = "", nil
	m.mu.Lock()
	m.claims[name] = c
	m.mu.Unlock()
	timeline := []any{"timeline", "own"}
	if prior != nil {
		timeline = []any{"timeline", "continued", "dts", prior.DTS, "age", m.cfg.Clock.Now().Sub(time.UnixMilli(prior.At)).Round(time.Millisecond)}
	}
	if from != "" {
		m.log.Info("stream taken over: its publisher came here with the live claim's credentials",
			append([]any{"stream", name, "from", from, "epoch", c.Epoch}, timeline...)...)
	} else {
		m.log.Info("stream claimed", append([]any{"stream", name, "epoch", c.Epoch}, timeline...)...)
	}
	var once sync.Once
	return func() { once.Do(func() { m.release(c) }) }, prior, nil
}

// release gives up c in the background, unless a newer claim of this node
// replaced it.
func (m *Member) release(c Claim) {
	m.mu.Lock()
	if cur, ok := m.claims[c.Stream]; ok && cur.Epoch == c.Epoch {
		delete(m.claims, c.Stream)
	}
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := m.cfg.Registry.Release(context.Background(), c)
		if err != nil && !errors.Is(err, ErrLost) {
			m.log.Warn("releasing a stream's claim failed; it expires on its own", "stream", c.Stream, "err", err)
		}
	}()
}

// Claims returns this node's current claims.
func (m *Member) Claims() []Claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Claim, 0, len(m.claims))
	for _, c := range m.claims {
		out = append(out, c)
	}
	return out
}

// beat sends one heartbeat and renews every claim, stream record and relay
// record, in one call to the registry (Registry.Beat): one round trip
// however many streams the node has, so a store far away still renews
// every lease well within it.
func (m *Member) beat() {
	m.beatMu.Lock()
	defer m.beatMu.Unlock()
	b := BeatRecord{Node: m.cfg.Self}
	b.Node.State = StateServing
	m.mu.Lock()
	if m.draining {
		b.Node.State = StateDraining
	}
	b.Claims = make([]Claim, 0, len(m.claims))
	for _, c := range m.claims {
		b.Claims = append(b.Claims, c)
	}
	m.mu.Unlock()
	if m.cfg.Load != nil {
		b.Node.Load = m.cfg.Load()
	}
	if m.cfg.StreamViewers != nil {
		b.Node.StreamViewers = m.cfg.StreamViewers()
	}
	if (m.cfg.StreamInfo != nil || m.cfg.Timeline != nil) && len(b.Claims) > 0 {
		b.StreamInfos = make(map[streamname.Name]StreamInfo, len(b.Claims))
		for _, c := range b.Claims {
			rec := StreamInfo{Node: b.Node.ID}
			// An Info the registry would refuse is left out, not the beat.
			if m.cfg.StreamInfo != nil {
				if info := m.cfg.StreamInfo(c.Stream); len(info) <= maxStreamInfo {
					rec.Info = info
				}
			}
			if m.cfg.Timeline != nil {
				rec.Timeline = m.cfg.Timeline(c.Stream)
			}
			if rec.Info != nil || rec.Timeline != nil {
				b.StreamInfos[c.Stream] = rec
			}
		}
	}
	var active map[streamname.Name]NodeID
	now := m.cfg.Clock.Monotonic()
	if m.cfg.Relays != nil {
		active = m.cfg.Relays()
		refresh := RelayRefresh(m.cfg.NodeTimeout)
		for name, up := range active {
			if w, ok := m.relaysWritten[name]; ok && w.upstream == up && now.Sub(w.at) < refresh {
				continue
			}
			if b.Relays == nil {
				b.Relays = make(map[streamname.Name]NodeID)
			}
			b.Relays[name] = up
		}
	}
	lost, err := m.cfg.Registry.Beat(m.ctx, b)
	m.setReachable(err)
	if err != nil {
		select {
		case m.failed <- struct{}{}: // watchContact asks the peers
		default:
		}
		return // nothing known written; everything goes again next beat
	}
	m.touch(now)
	m.listPeers(now)
	for name := range m.relaysWritten {
		if _, ok := active[name]; !ok {
			delete(m.relaysWritten, name)
		}
	}
	for name, up := range b.Relays {
		m.relaysWritten[name] = relayWrite{upstream: up, at: now}
	}
	for _, c := range lost {
		m.lose(c.Stream, c.Epoch+1, "")
	}
}

// lose gives up this node's claim of name if it is older than epoch: a
// newer claim (by node, when known) exists. OnLost tells the node to stop
// serving the name.
func (m *Member) lose(name streamname.Name, epoch uint64, node NodeID) {
	m.mu.Lock()
	cur, ok := m.claims[name]
	if ok && cur.Epoch < epoch {
		delete(m.claims, name)
	}
	m.mu.Unlock()
	if !ok || cur.Epoch >= epoch {
		return
	}
	m.log.Warn("stream claim lost to a newer owner", "stream", name, "epoch", cur.Epoch, "owner", node)
	if m.cfg.OnLost != nil {
		m.cfg.OnLost(name)
	}
}

// setReachable logs the registry becoming unreachable or reachable again.
func (m *Member) setReachable(err error) {
	if m.ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	was := m.reachable
	m.reachable = err == nil
	m.mu.Unlock()
	switch {
	case was && err != nil:
		m.log.Warn("registry unreachable: serving what this node has; new publishes are refused", "err", err)
	case !was && err == nil:
		m.log.Info("registry reachable again: node and claims re-registered")
	}
}

// touch records contact with the cluster made at at (a beat or a probe
// sent then).
func (m *Member) touch(at time.Time) {
	m.mu.Lock()
	if at.After(m.contact) {
		m.contact = at
	}
	m.cutOff = false
	m.mu.Unlock()
}

// listPeers lists the registry's nodes when the last listing is older
// than peersEvery, or than a node timeout while it found no peer.
func (m *Member) listPeers(now time.Time) {
	m.mu.Lock()
	every := peersEvery
	if len(m.peers) == 0 {
		every = m.cfg.NodeTimeout
	}
	due := m.peersAt.IsZero() || now.Sub(m.peersAt) >= every
	m.mu.Unlock()
	if !due {
		return
	}
	nodes, err := m.cfg.Registry.Nodes(m.ctx)
	if err != nil {
		return // the next beat lists again
	}
	peers := make([]Node, 0, len(nodes))
	for _, n := range nodes {
		if n.ID != m.cfg.Self.ID && n.HTTPAddr != "" {
			peers = append(peers, n)
		}
	}
	m.mu.Lock()
	m.peers, m.peersAt = peers, now
	m.mu.Unlock()
}

// watchContact runs while the registry cannot be reached: it asks a few
// known peers at a time whether they answer, and gives up this node's
// claims once neither the registry nor a peer has answered for a lease.
func (m *Member) watchContact() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.failed:
		}
		for {
			m.mu.Lock()
			peers, reachable, cutOff := m.peers, m.reachable, m.cutOff
			m.mu.Unlock()
			if reachable || cutOff || len(peers) == 0 {
				break // back in touch, given up already, or alone: serving
			}
			sent := m.cfg.Clock.Monotonic()
			if err := m.reachAny(peers); err == nil {
				m.touch(sent)
			}
			m.mu.Lock()
			deadline := m.contact.Add(m.cfg.NodeTimeout)
			m.mu.Unlock()
			wait := deadline.Sub(m.cfg.Clock.Monotonic())
			if wait <= 0 {
				m.giveUp()
				break
			}
			select {
			case <-m.ctx.Done():
				return
			case <-m.cfg.Clock.After(min(wait, m.cfg.Every/2)):
			}
		}
	}
}

// reachAny asks up to probePeers of peers, picked at random, at once; nil
// as soon as one answers.
func (m *Member) reachAny(peers []Node) error {
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	pick := make([]Node, len(peers))
	copy(pick, peers)
	rand.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
	pick = pick[:min(len(pick), probePeers)]
	errs := make(chan error, len(pick))
	for _, n := range pick {
		go func() { errs <- m.cfg.Reach(ctx, n) }()
	}
	var all []error
	answered := false
	for range pick {
		err := <-errs
		if err == nil && !answered {
			answered = true
			cancel() // the others end at once
		}
		all = append(all, err)
	}
	if answered {
		return nil
	}
	return fmt.Errorf("no peer answered: %w", errors.Join(all...))
}

// giveUp ends this node's claims for want of contact: by now another node
// may own its streams, so it stops serving them (OnLost).
func (m *Member) giveUp() {
	m.mu.Lock()
	if m.reachable || m.cutOff {
		m.mu.Unlock()
		return
	}
	m.cutOff = true
	claims := m.claims
	m.claims = make(map[streamname.Name]Claim)
	since := m.cfg.Clock.Monotonic().Sub(m.contact).Round(time.Millisecond)
	peers := len(m.peers)
	m.mu.Unlock()
	names := make([]streamname.Name, 0, len(claims))
	for name := range claims {
		names = append(names, name)
	}
	m.log.Warn("cut off: neither the registry nor any known peer answered for a lease; another node may own this node's streams now, so it stops serving them and claims anew once back in touch",
		"since", since, "peers", peers, "streams", names)
	if m.cfg.OnLost != nil {
		for _, name := range names {
			m.cfg.OnLost(name)
		}
	}
}
