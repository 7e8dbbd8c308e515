package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/amf0"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// PullPath is the path prefix of the internal endpoint that serves a
// stream to another node: PullPath + "APP/STREAM", as FLV, to requests
// signed with SignPull.
const PullPath = "/internal/v1/pull/"

// HeaderHistory, set on a pull, asks for the stream from the upstream's
// recent past (stream.Reader.Rewind) rather than its newest keyframe: a
// relay's first pull sets it.
const HeaderHistory = "X-Meshcast-History"

// endMarker is the script data a node sends a puller when the stream ended
// (rather than the node failing), so the puller ends its copy at once.
const endMarker = "onMeshcastStreamEnd"

// EndTag returns the FLV tag a node sends a puller when the stream ended.
func EndTag() []byte {
	body, _ := amf0.AppendAll(nil, endMarker)
	return flv.AppendTag(nil, &media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, Payload: body})
}

// isEnd reports whether p is the end marker.
func isEnd(p *media.Packet) bool { return isMarker(p, endMarker) }

// keepAliveMarker is the script data a node sends a puller when it has
// had nothing else to send for KeepAliveEvery: the stream is alive but has
// no packets (its publisher paused, or is away within its grace period, or
// this node is between upstreams itself), so a puller that hears nothing
// at all for SilenceTimeout has lost the link, not the stream.
const keepAliveMarker = "onMeshcastKeepAlive"

// KeepAliveEvery is how long a node serving a pull lets it go without a
// byte before it sends KeepAliveTag.
const KeepAliveEvery = time.Second

// SilenceTimeout is how long a relay waits without a byte from its
// upstream before it takes the link for dead and looks for another path.
// A live stream sends packets many times a second, and an upstream with
// nothing to send sends a keep-alive every KeepAliveEvery.
const SilenceTimeout = 2 * time.Second

// KeepAliveTag returns the FLV tag a node sends a puller to show the link
// is alive while the stream has no packets. A relay drops it; a player
// that gets it (through a node older than relays' keep-alives) ignores an
// unknown script tag.
func KeepAliveTag() []byte {
	body, _ := amf0.AppendAll(nil, keepAliveMarker)
	return flv.AppendTag(nil, &media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, Payload: body})
}

// isKeepAlive reports whether p is the keep-alive marker.
func isKeepAlive(p *media.Packet) bool { return isMarker(p, keepAliveMarker) }

func isMarker(p *media.Packet, marker string) bool {
	if p.Kind != media.KindData {
		return false
	}
	v, err := amf0.DecodeAll(p.Payload)
	return err == nil && len(v) == 1 && v[0] == marker
}

// errSilent ends a pull whose upstream sent nothing for SilenceTimeout.
var errSilent = fmt.Errorf("upstream silent for %v", SilenceTimeout)

// Relay timings.
const (
	lookupTimeout = 3 * time.Second // finding an upstream for a viewer
	headerTimeout = 5 * time.Second // an upstream's response head
	maxBackoff    = 2 * time.Second
)

// RelayHub is what relays need from the node's stream table.
type RelayHub interface {
	// OpenRelay creates the local stream name fed by a relay; it fails
	// with stream.ErrBusy when the stream exists already.
	OpenRelay(name streamname.Name, from string) (*stream.Publisher, error)
}

// RelayConfig configures a node's relays.
type RelayConfig struct {
	// Self is this node.
	Self NodeID
	// Region is this node's region; mesh pulls prefer peers in it.
	Region string
	// Registry finds owners, parents and peers.
	Registry Registry
	// Secret signs pulls (SignPull).
	Secret string
	// Client sends pulls. Defaults to a PeerClient of the relays' own,
	// signing with Secret as Self.
	Client *PeerClient
	// Parents, when set, are pulled through instead of the owner (a tree):
	// the first live one is used.
	Parents []NodeID
	// Mesh lets a relay pull from a peer already relaying the stream
	// straight from its owner, same region first.
	Mesh bool
	// Idle ends a relay that has had no viewers, or no upstream, this long.
	// Defaults to 30s.
	Idle time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock times retries and idleness; an upstream's network timeouts
	// are real time whatever it says. Defaults to clock.Real.
	Clock clock.Clock
}

// Relays pulls streams this node does not own from the nodes that have
// them: one upstream connection per stream, shared by all of this node's
// viewers of it. When the upstream breaks a relay looks for the owner again
// with backoff while its viewers stay connected, and resumes at the next
// keyframe with timestamps that keep increasing.
type Relays struct {
	cfg    RelayConfig
	hub    RelayHub
	log    *slog.Logger
	client *PeerClient

	mu     sync.Mutex
	active map[streamname.Name]*relay
	closed bool

	watch sync.Once // the claims watch starts with the first relay

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// relay is one stream pulled into this node.
type relay struct {
	name     streamname.Name
	ready    chan struct{} // closed once opened or failed
	err      error
	pub      *stream.Publisher
	upstream atomic.Value  // NodeID pulled from now, "" while reconnecting
	wake     chan struct{} // a new claim of the name: look again at once
	path     atomic.Value  // []NodeID the stream comes through: upstream first
	via      []NodeID      // the nodes before this one in the pull that asked first
}

// NewRelays creates a node's relay manager.
func NewRelays(cfg RelayConfig, hub RelayHub) *Relays {
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Client == nil {
		self := cfg.Self
		cfg.Client = NewPeerClient(cfg.Secret, func() NodeID { return self })
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Relays{
		cfg:    cfg,
		hub:    hub,
		log:    cfg.Logger.With("component", "relay"),
		client: cfg.Client,
		active: make(map[streamname.Name]*relay),
		ctx:    ctx,
		cancel: cancel,
	}
}

// Close stops every relay; their streams end for their viewers.
func (m *Relays) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.client.HTTP().CloseIdleConnections()
}

// Pull starts relaying name into the hub unless a relay of it runs
// already. It fails when no live node has the stream. via is the chain of
// nodes a pull that asked for the stream passed (ParseVia), none for a
// viewer of this node: the relay's own pulls carry it on, and it never
// pulls from a node in it.
func (m *Relays) Pull(name streamname.Name, via []NodeID) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("relays closed")
	}
	if r := m.active[name]; r != nil {
		m.mu.Unlock()
		<-r.ready
		return r.err
	}
	m.watch.Do(func() { m.wg.Go(m.watchClaims) })
	r := &relay{name: name, ready: make(chan struct{}), via: via, wake: make(chan struct{}, 1)}
	r.upstream.Store(NodeID(""))
	m.active[name] = r
	m.mu.Unlock()

	r.err = m.open(r)
	close(r.ready)
	if r.err != nil || r.pub == nil {
		m.forget(r)
	}
	return r.err
}

// open finds an upstream for r and starts pulling from it.
func (m *Relays) open(r *relay) error {
	ctx, cancel := context.WithTimeout(m.ctx, lookupTimeout)
	defer cancel()
	up, err := m.choose(ctx, r, false)
	if err != nil {
		return err
	}
	pub, err := m.hub.OpenRelay(r.name, string(up.ID))
	if errors.Is(err, stream.ErrBusy) {
		return nil // a publisher or another relay got here first
	}
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed { // Close waits only for the relays it counted
		pub.Close()
		return errors.New("relays closed")
	}
	r.pub = pub
	m.wg.Add(1)
	go m.run(r, up)
	return nil
}

// forget drops r from the active relays.
func (m *Relays) forget(r *relay) {
	m.mu.Lock()
	if m.active[r.name] == r {
		delete(m.active, r.name)
	}
	m.mu.Unlock()
}

// Active returns the streams relayed now and the node each is pulled from.
func (m *Relays) Active() map[streamname.Name]NodeID {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[streamname.Name]NodeID, len(m.active))
	for name, r := range m.active {
		if up := r.upstream.Load().(NodeID); up != "" {
			out[name] = up
		}
	}
	return out
}

// Path returns the nodes name comes through to this node, its upstream
// first, as far as the upstream told (HeaderPath); none when this node
// does not relay name or is between upstreams. A pull from a node on the
// path would close a circle (see ParseVia's caller).
func (m *Relays) Path(name streamname.Name) []NodeID {
	m.mu.Lock()
	r := m.active[name]
	m.mu.Unlock()
	if r == nil {
		return nil
	}
	select {
	case <-r.ready: // r.pub is set
	default:
		return nil // opening: it has no upstream yet
	}
	if r.pub == nil || !r.pub.Attached() {
		return nil // not relayed, or a local publisher took the stream over
	}
	p, _ := r.path.Load().([]NodeID)
	return p
}

// choose finds the node to pull r's stream from (ChooseUpstream), other
// than a parent or peer in avoid.
func (m *Relays) choose(ctx context.Context, r *relay, direct bool, avoid ...NodeID) (Node, error) {
	return ChooseUpstream(ctx, m.cfg.Registry, r.name, UpstreamQuery{
		Self:    m.cfg.Self,
		Region:  m.cfg.Region,
		Parents: m.cfg.Parents,
		Mesh:    m.cfg.Mesh,
		Via:     r.via,
		Direct:  direct,
		Avoid:   avoid,
	})
}

// UpstreamQuery is a node asking where to pull a stream from.
type UpstreamQuery struct {
	// Self, Region, Parents and Mesh are the asking node's (RelayConfig).
	Self    NodeID
	Region  string
	Parents []NodeID
	Mesh    bool
	// Via is the chain of nodes the pull that asked for the stream passed
	// (ParseVia): none of them is chosen but as the owner.
	Via []NodeID
	// Direct asks for the owner only: an upstream answered that a pull
	// looped (ErrLoop).
	Direct bool
	// Avoid lists parents and mesh peers not to choose: the link to them
	// went silent. The owner is chosen whatever it lists.
	Avoid []NodeID
}

// ChooseUpstream is how a relay picks the one node it pulls name from,
// reading only reg: a live, serving parent (the first of q.Parents), else
// with q.Mesh a peer relaying name straight from its owner, same region
// first, else the owner itself. ErrNotFound when name has no owner or q.Self
// owns it. Relays calls it; so does the cluster simulation (internal/sim).
func ChooseUpstream(ctx context.Context, reg Registry, name streamname.Name, q UpstreamQuery) (Node, error) {
	owner, err := reg.Owner(ctx, name)
	if err != nil {
		return Node{}, err
	}
	if owner.Node == q.Self {
		return Node{}, fmt.Errorf("%w: %s is owned by this node", ErrNotFound, name)
	}
	for _, p := range q.Parents {
		if q.Direct || p == q.Self || slices.Contains(q.Via, p) || slices.Contains(q.Avoid, p) {
			continue
		}
		if n, err := reg.Node(ctx, p); err == nil && n.State == StateServing {
			return n, nil
		}
	}
	if q.Mesh && !q.Direct {
		if n, ok := meshPeer(ctx, reg, name, owner.Node, q.Self, q.Region, q.Avoid); ok && !slices.Contains(q.Via, n.ID) {
			return n, nil
		}
	}
	n, err := reg.Node(ctx, owner.Node)
	if err != nil {
		return Node{}, fmt.Errorf("owner %s of %s: %w", owner.Node, name, err)
	}
	return n, nil
}

// meshPeer picks a live node other than self relaying name straight from
// its owner, in region first. Pulling only from such first-tier relays
// keeps a mesh free of cycles.
func meshPeer(ctx context.Context, reg Registry, name streamname.Name, owner, self NodeID, region string, avoid []NodeID) (Node, bool) {
	relays, err := reg.Relays(ctx, name)
	if err != nil {
		return Node{}, false
	}
	var other Node
	for _, r := range relays {
		if r.Upstream != owner || r.Node == self || slices.Contains(avoid, r.Node) {
			continue
		}
		n, err := reg.Node(ctx, r.Node)
		if err != nil || n.State != StateServing {
			continue
		}
		if n.Region == region {
			return n, true
		}
		if other.ID == "" {
			other = n
		}
	}
	return other, other.ID != ""
}

// run pulls r's stream until it ends upstream, it has had no viewers or no
// upstream for the idle time, or the node closes. Its viewers stay
// connected across upstream failures.
func (m *Relays) run(r *relay, up Node) {
	defer m.wg.Done()
	log := m.log.With("stream", r.name)
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	defer func() {
		r.pub.Close() // ends the local stream, unless a publisher took it over
		m.forget(r)
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		m.cfg.Registry.DeleteRelay(dctx, r.name, m.cfg.Self)
		dcancel()
	}()
	go m.watchIdle(ctx, cancel, r, log)

	delivered := false // a session delivered packets: the next one restarts
	direct := false    // an upstream answered that a pull looped: owner only
	var avoid []NodeID // upstreams whose link went silent since a pull last delivered
	backoff := 100 * time.Millisecond
	lastUp := m.cfg.Clock.Monotonic()
	for {
		if up.ID != "" {
			r.upstream.Store(up.ID)
			got, ended, err := m.pullFrom(ctx, r, up, delivered)
			r.upstream.Store(NodeID(""))
			r.path.Store([]NodeID(nil))
			if got {
				delivered, backoff, lastUp = true, 100*time.Millisecond, m.cfg.Clock.Monotonic()
				avoid = avoid[:0] // a path worked since: any may again
			}
			if errors.Is(err, errSilent) && !slices.Contains(avoid, up.ID) {
				// The link is dead, not the stream: another path (a live
				// parent or peer, else the owner) rather than this one.
				avoid = append(avoid, up.ID)
			}
			switch {
			case ended:
				log.Info("relay ending: the stream ended upstream", "upstream", up.ID)
				return
			case ctx.Err() != nil:
				return
			case errors.Is(err, stream.ErrClosed):
				return // a local publisher took the stream over
			case errors.Is(err, ErrLoop):
				direct = true
				log.Warn("relay pull came back round to a node it passed; pulling from the owner from now on", "upstream", up.ID, "err", err)
			default:
				log.Warn("relay upstream lost; looking for the stream again", "upstream", up.ID, "err", err)
			}
		}
		if m.cfg.Clock.Monotonic().Sub(lastUp) > m.cfg.Idle {
			log.Info("relay ending: no node has had the stream", "for", m.cfg.Idle)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-m.cfg.Clock.After(backoff):
			backoff = min(2*backoff, maxBackoff)
		case <-r.wake:
			// The name was claimed (a publisher is back, here or on
			// another node): look for it now.
			backoff = 100 * time.Millisecond
		}
		lctx, lcancel := context.WithTimeout(ctx, lookupTimeout)
		var err error
		up, err = m.choose(lctx, r, direct, avoid...)
		lcancel()
		if err != nil {
			up = Node{}
		}
	}
}

// watchClaims wakes the relay of each name claimed anywhere in the
// cluster, so a relay waiting for an owner (its upstream died) pulls from
// the new one without waiting out its backoff.
func (m *Relays) watchClaims() {
	for c := range m.cfg.Registry.Claimed(m.ctx) {
		m.mu.Lock()
		r := m.active[c.Stream]
		m.mu.Unlock()
		if r != nil {
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}
	}
}

// watchIdle cancels a relay whose stream has had no readers for the idle
// time.
func (m *Relays) watchIdle(ctx context.Context, cancel context.CancelFunc, r *relay, log *slog.Logger) {
	t := m.cfg.Clock.NewTicker(min(time.Second, m.cfg.Idle/4))
	defer t.Stop()
	since := m.cfg.Clock.Monotonic()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			now := m.cfg.Clock.Monotonic()
			if r.pub.Stream().Readers() > 0 {
				since = now
				continue
			}
			if now.Sub(since) >= m.cfg.Idle {
				log.Info("relay ending: no viewers", "for", m.cfg.Idle)
				cancel()
				return
			}
		}
	}
}

// pullFrom copies the stream from up into r until it fails or ends. got
// reports whether any packet arrived; ended, that up said the stream ended.
func (m *Relays) pullFrom(ctx context.Context, r *relay, up Node, restart bool) (got, ended bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+up.HTTPAddr+PullPath+string(r.name), nil)
	if err != nil {
		return false, false, err
	}
	SetVia(req, r.via)
	if !restart {
		// The stream is new here: it starts with the upstream's recent past
		// (stream.Reader.Rewind), so that this node's HLS muxers have whole
		// segments at once. A resumed pull starts at the newest keyframe:
		// what came before it is here already.
		req.Header.Set(HeaderHistory, "1")
	}
	// From the moment it asks, the stream comes through up: a pull from up
	// crossing this one is refused as a circle.
	r.path.Store([]NodeID{up.ID})
	// The response head must come within headerTimeout; the body may last.
	head := time.AfterFunc(headerTimeout, cancel)
	resp, err := m.client.Do(req)
	if !head.Stop() {
		err = errors.Join(err, fmt.Errorf("no response head within %v", headerTimeout))
	}
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return false, false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		r.path.Store(append([]NodeID{up.ID}, parsePath(resp.Header.Get(HeaderPath))...))
	case http.StatusLoopDetected:
		return false, false, fmt.Errorf("%w: upstream %s answered %s", ErrLoop, up.ID, resp.Status)
	default:
		return false, false, fmt.Errorf("upstream answered %s", resp.Status)
	}
	// An upstream that goes silent is as good as gone: a live stream
	// sends packets many times a second, and an upstream without any
	// sends keep-alives.
	var silent atomic.Bool
	silence := time.AfterFunc(SilenceTimeout, func() { silent.Store(true); cancel() })
	defer silence.Stop()
	quiet := func(err error) error {
		if silent.Load() {
			return fmt.Errorf("%w: %w", errSilent, err)
		}
		return err
	}
	fr := flv.NewReader(resp.Body)
	if _, _, err := fr.ReadHeader(); err != nil {
		return false, false, quiet(err)
	}
	m.log.Info("relay pulling", "stream", r.name, "upstream", up.ID, "addr", up.HTTPAddr)
	for {
		p, err := fr.ReadPacket()
		if err != nil {
			return got, false, quiet(err)
		}
		silence.Reset(SilenceTimeout)
		if isEnd(&p) {
			return got, true, nil
		}
		if isKeepAlive(&p) {
			continue
		}
		if !got && restart {
			r.pub.Restart() // continue at the next keyframe, later timestamps
		}
		got = true
		if err := r.pub.WritePacket(&p); err != nil {
			return got, false, err
		}
	}
}
