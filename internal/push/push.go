// Package push restreams live streams to other servers (YouTube, Twitch,
// another meshcast or nginx-rtmp): for each stream, a pusher per target
// URL, started when the stream is published on this node (its owner: a
// relay never pushes) and stopped when it ends. A pusher is a reader of the
// stream like any viewer: it never slows the stream, and when it falls
// behind it skips to the next keyframe. A broken target is retried with
// backoff.
package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Protocol is the reader protocol of pushes: nobody watching here.
const Protocol = "push"

// Backoff bounds: a failed push is retried after MinBackoff, doubling up
// to MaxBackoff; one that pushed for StableRun starts again from the least.
const (
	MinBackoff = time.Second
	MaxBackoff = 30 * time.Second
	StableRun  = 30 * time.Second
)

// MaxPerStream bounds the pushes of one stream.
const MaxPerStream = 16

// Errors callers branch on.
var (
	ErrBadTarget = errors.New("push target must be rtmp://HOST[:PORT]/APP/STREAM, rtmps://... or srt://HOST:PORT?streamid=...")
	ErrPrivate   = errors.New("push target is a loopback, link-local or cluster node address (--push-allow-private allows it)")
	ErrTooMany   = fmt.Errorf("a stream has at most %d pushes", MaxPerStream)
	ErrNotFound  = errors.New("no such push")
)

// Hub is what pushes need of the node's streams.
type Hub interface {
	NewReader(name streamname.Name, proto string) (*stream.Reader, error)
	Subscribe(f func(hub.Event))
}

// Store keeps the pushes added through the API where every node of the
// cluster finds them: the registry.
type Store interface {
	SetPushes(ctx context.Context, name streamname.Name, rec []byte) error
	Pushes(ctx context.Context, name streamname.Name) ([]byte, error)
}

// Config configures the pushes.
type Config struct {
	// Targets returns the configured push URLs of a stream, {app} and
	// {stream} already replaced; nil: none.
	Targets func(name streamname.Name) []string
	// Store keeps the pushes added through the API, sealed; nil: this
	// node's memory.
	Store Store
	// Sealer seals Store's records (they hold stream keys); nil: a random
	// key, for a store no other node reads.
	Sealer *cluster.Sealer
	// Poll is how often the node a stream is published on looks for
	// pushes added or removed through another node. Defaults to 2s.
	Poll time.Duration
	// AllowPrivate lets targets resolve to loopback and link-local
	// addresses and to the cluster's own nodes.
	AllowPrivate bool
	// NodeAddrs returns the cluster's own node addresses, which targets
	// may not resolve to; nil: none.
	NodeAddrs func() []netip.Addr
	// Timeout bounds connecting, each write and each call to Store.
	// Defaults to 10s.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Status is what a push is doing.
type Status struct {
	ID         string `json:"id"`
	Stream     string `json:"stream"`
	Target     string `json:"target"` // redacted: no user info, stream key or query values
	Source     string `json:"source"` // "config" or "api"
	State      string `json:"state"`  // connecting, pushing, waiting (to retry), stopped
	BytesSent  int64  `json:"bytes_sent"`
	Reconnects int64  `json:"reconnects"`
	LastError  string `json:"last_error,omitempty"`
}

// Manager runs the node's pushes.
type Manager struct {
	cfg Config
	hub Hub
	log *slog.Logger

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	kick   chan struct{} // a stream was published here: reconcile now
	loop   sync.WaitGroup

	storeMu sync.Mutex // serializes this node's changes to the store

	mu     sync.Mutex
	byName map[streamname.Name][]*pusher
	live   map[streamname.Name]bool
	closed bool
	wg     sync.WaitGroup

	onChange func(Status) // nil: nobody listens
}

// target is a push's destination, as the store keeps it.
type target struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	source string
}

// New starts pushing the streams published on h as cfg says.
func New(cfg Config, h Hub) *Manager {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Store == nil {
		cfg.Store = cluster.NewMemory(cluster.MemoryConfig{})
	}
	if cfg.Sealer == nil {
		cfg.Sealer = cluster.NewSealer("", "pushes")
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, hub: h, log: cfg.Logger.With("component", "push"), ctx: ctx, cancel: cancel,
		kick: make(chan struct{}, 1), byName: map[streamname.Name][]*pusher{}, live: map[streamname.Name]bool{}}
	h.Subscribe(m.event)
	m.loop.Go(m.reconcileLoop)
	return m
}

// OnChange calls f with a push's status whenever its state changes.
// Set it before any stream is published.
func (m *Manager) OnChange(f func(Status)) { m.onChange = f }

// event starts a stream's configured pushes when it is published here,
// and stops them all when it ends. The pushes added through the API are
// read from the store by the reconcile loop, woken at once: the hub's
// events never wait on the store.
func (m *Manager) event(ev hub.Event) {
	switch ev.Type {
	case "publish":
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed || m.live[ev.Name] {
			return
		}
		m.live[ev.Name] = true
		if m.cfg.Targets != nil {
			for i, u := range m.cfg.Targets(ev.Name) {
				m.startLocked(ev.Name, target{ID: fmt.Sprintf("config-%d", i+1), URL: u, source: "config"})
			}
		}
		select {
		case m.kick <- struct{}{}:
		default:
		}
	case "end":
		m.mu.Lock()
		ps := m.byName[ev.Name]
		delete(m.byName, ev.Name)
		delete(m.live, ev.Name)
		m.mu.Unlock()
		for _, p := range ps {
			p.stop()
		}
	}
}

// reconcileLoop makes the API-added pushes of the streams published here
// those of the store, at once after a publish and every Poll.
func (m *Manager) reconcileLoop() {
	tick := time.NewTicker(m.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		case <-tick.C:
		}
		m.mu.Lock()
		names := make([]streamname.Name, 0, len(m.live))
		for name := range m.live {
			names = append(names, name)
		}
		m.mu.Unlock()
		for _, name := range names {
			m.reconcile(name)
		}
	}
}

// reconcile starts name's stored pushes that do not run here and stops
// the API-added ones that are no longer stored.
func (m *Manager) reconcile(name streamname.Name) {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
	defer cancel()
	stored, err := m.load(ctx, name)
	if err != nil {
		if m.ctx.Err() == nil {
			m.log.Warn("pushes of a stream unreadable; those running go on", "stream", name, "err", err)
		}
		return
	}
	want := map[string]target{}
	for _, t := range stored {
		want[t.ID] = t
	}
	var stop []*pusher
	m.mu.Lock()
	if !m.live[name] || m.closed {
		m.mu.Unlock()
		return
	}
	ps := m.byName[name][:0]
	for _, p := range m.byName[name] {
		if p.t.source == "api" {
			if _, ok := want[p.t.ID]; !ok {
				stop = append(stop, p)
				continue
			}
			delete(want, p.t.ID)
		}
		ps = append(ps, p)
	}
	m.byName[name] = ps
	for _, t := range stored {
		if _, ok := want[t.ID]; ok {
			m.startLocked(name, t)
		}
	}
	m.mu.Unlock()
	for _, p := range stop {
		p.stop()
	}
}

// load returns name's API-added pushes from the store.
func (m *Manager) load(ctx context.Context, name streamname.Name) ([]target, error) {
	rec, err := m.cfg.Store.Pushes(ctx, name)
	if err != nil || rec == nil {
		return nil, err
	}
	plain, err := m.cfg.Sealer.Open(rec)
	if err != nil {
		return nil, err
	}
	var ts []target
	if err := json.Unmarshal(plain, &ts); err != nil {
		return nil, fmt.Errorf("push: stored pushes of %s: %w", name, err)
	}
	for i := range ts {
		ts[i].source = "api"
	}
	return ts, nil
}

// save replaces name's API-added pushes in the store.
func (m *Manager) save(ctx context.Context, name streamname.Name, ts []target) error {
	if len(ts) == 0 {
		return m.cfg.Store.SetPushes(ctx, name, nil)
	}
	plain, err := json.Marshal(ts)
	if err != nil {
		return err
	}
	return m.cfg.Store.SetPushes(ctx, name, m.cfg.Sealer.Seal(plain))
}

// startLocked starts a pusher of t. Caller holds m.mu.
func (m *Manager) startLocked(name streamname.Name, t target) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pusher{m: m, name: name, t: t, cancel: cancel, done: make(chan struct{})}
	p.setState("connecting")
	m.byName[name] = append(m.byName[name], p)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.done)
		p.run(ctx)
	}()
}

// Add pushes the stream name to rawURL from now on, from whichever node
// it is published on, and returns its status.
func (m *Manager) Add(name streamname.Name, rawURL string) (Status, error) {
	if _, err := parseTarget(rawURL); err != nil {
		return Status{}, err
	}
	var id [6]byte
	rand.Read(id[:])
	t := target{ID: hex.EncodeToString(id[:]), URL: rawURL, source: "api"}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
	defer cancel()
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	stored, err := m.load(ctx, name)
	if err != nil {
		return Status{}, err
	}
	configured := 0
	if m.cfg.Targets != nil {
		configured = len(m.cfg.Targets(name))
	}
	if configured+len(stored) >= MaxPerStream {
		return Status{}, ErrTooMany
	}
	if err := m.save(ctx, name, append(stored, t)); err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	if m.live[name] && !m.closed {
		m.startLocked(name, t)
	}
	m.mu.Unlock()
	return Status{ID: t.ID, Stream: string(name), Target: Redact(rawURL), Source: t.source, State: "stopped"}, nil
}

// Remove stops and forgets an API-added push of name.
func (m *Manager) Remove(name streamname.Name, id string) error {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
	defer cancel()
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	stored, err := m.load(ctx, name)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(stored, func(t target) bool { return t.ID == id })
	if i < 0 {
		return ErrNotFound
	}
	if err := m.save(ctx, name, slices.Delete(stored, i, i+1)); err != nil {
		return err
	}
	var stop *pusher
	m.mu.Lock()
	ps := m.byName[name]
	if j := slices.IndexFunc(ps, func(p *pusher) bool { return p.t.source == "api" && p.t.ID == id }); j >= 0 {
		stop = ps[j]
		m.byName[name] = slices.Delete(ps, j, j+1)
	}
	m.mu.Unlock()
	if stop != nil {
		stop.stop()
	}
	return nil
}

// List returns the pushes of name: those running here, then the
// API-added ones that do not (the stream is not live, or is published on
// another node, whose list has their status).
func (m *Manager) List(name streamname.Name) ([]Status, error) {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Timeout)
	defer cancel()
	stored, err := m.load(ctx, name)
	if err != nil {
		return nil, err
	}
	out := []Status{}
	running := map[string]bool{}
	m.mu.Lock()
	for _, p := range m.byName[name] {
		out = append(out, p.status())
		running[p.t.ID] = true
	}
	m.mu.Unlock()
	for _, t := range stored {
		if !running[t.ID] {
			out = append(out, Status{ID: t.ID, Stream: string(name), Target: Redact(t.URL), Source: t.source, State: "stopped"})
		}
	}
	return out, nil
}

// Of returns the status of name's pushes running here.
func (m *Manager) Of(name streamname.Name) []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Status
	for _, p := range m.byName[name] {
		out = append(out, p.status())
	}
	return out
}

// All returns the status of every push running here.
func (m *Manager) All() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Status
	for _, ps := range m.byName {
		for _, p := range ps {
			out = append(out, p.status())
		}
	}
	return out
}

// Close stops every push and waits for them.
func (m *Manager) Close() {
	m.cancel()
	m.loop.Wait()
	m.mu.Lock()
	m.closed = true
	var all []*pusher
	for _, ps := range m.byName {
		all = append(all, ps...)
	}
	m.byName = map[streamname.Name][]*pusher{}
	m.mu.Unlock()
	for _, p := range all {
		p.cancel()
	}
	m.wg.Wait()
}

// pusher pushes one stream to one target.
type pusher struct {
	m      *Manager
	name   streamname.Name
	t      target
	cancel context.CancelFunc
	done   chan struct{}

	state      atomic.Value // string
	sent       atomic.Int64
	reconnects atomic.Int64
	lastErr    atomic.Value // string
}

func (p *pusher) stop() {
	p.cancel()
	<-p.done
}

// setState records the push's state and tells OnChange's listener when it
// changed.
func (p *pusher) setState(state string) {
	if old, _ := p.state.Swap(state).(string); old != state && p.m.onChange != nil {
		p.m.onChange(p.status())
	}
}

func (p *pusher) status() Status {
	s := Status{ID: p.t.ID, Stream: string(p.name), Target: Redact(p.t.URL), Source: p.t.source,
		State: p.state.Load().(string), BytesSent: p.sent.Load(), Reconnects: p.reconnects.Load()}
	if e, ok := p.lastErr.Load().(string); ok {
		s.LastError = e
	}
	return s
}

// run pushes until ctx ends, reconnecting with backoff.
func (p *pusher) run(ctx context.Context) {
	log := p.m.log.With("stream", p.name, "target", Redact(p.t.URL))
	backoff := MinBackoff
	for attempt := 0; ; attempt++ {
		p.setState("connecting")
		start := time.Now()
		err := p.once(ctx, log)
		if ctx.Err() != nil {
			p.setState("stopped")
			return
		}
		if time.Since(start) >= StableRun {
			backoff = MinBackoff
		}
		msg := redactErr(err, p.t.URL)
		p.lastErr.Store(msg)
		p.setState("waiting")
		log.Warn("push broken; retrying", "err", msg, "in", backoff)
		select {
		case <-ctx.Done():
			p.setState("stopped")
			return
		case <-time.After(backoff):
		}
		p.reconnects.Add(1)
		backoff = min(2*backoff, MaxBackoff)
	}
}

// once connects, publishes and pushes the stream until something fails.
func (p *pusher) once(ctx context.Context, log *slog.Logger) error {
	u, err := parseTarget(p.t.URL)
	if err != nil {
		return err
	}
	if u.Scheme == "srt" {
		return p.onceSRT(ctx, u, func() { p.setState("pushing"); log.Info("push started") })
	}
	dial := func(ctx context.Context, network, hostport string) (net.Conn, error) {
		addr, err := p.m.checkedAddr(ctx, hostport)
		if err != nil {
			return nil, err
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c, conn, key, err := rtmp.DialURL(ctx, u, dial, p.m.cfg.Timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	stopOnCancel := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopOnCancel()
	if err := c.Publish(key); err != nil {
		return err
	}
	conn.SetDeadline(time.Time{})
	// What the server sends (acknowledgement requests, pings) is read and
	// dropped, so it never fills the connection.
	go func() {
		for {
			if _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	rd, err := p.m.hub.NewReader(p.name, Protocol)
	if err != nil {
		return err
	}
	defer rd.Close()
	p.setState("pushing")
	log.Info("push started")
	var pkts []*media.Packet
	var body []byte
	base, based := int64(0), false
	for {
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		if err != nil {
			return err
		}
		conn.SetWriteDeadline(time.Now().Add(p.m.cfg.Timeout))
		for _, pkt := range pkts {
			if pkt.Kind == media.KindData {
				continue // the sequence headers say what the codecs are
			}
			if !based {
				base, based = pkt.DTS, true
			}
			body = flv.AppendBody(body[:0], pkt)
			if err := c.WriteMedia(flv.TagType(pkt), uint32(pkt.DTS-base), body); err != nil {
				return err
			}
			p.sent.Add(int64(len(body)))
		}
		if err := c.Flush(); err != nil {
			return err
		}
	}
}

// checkedAddr resolves hostport's host and returns IP:PORT to dial, or
// ErrPrivate. The address checked is the address dialled: a name that
// resolves elsewhere a second time gains nothing.
func (m *Manager) checkedAddr(ctx context.Context, hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	if !m.cfg.AllowPrivate {
		for _, a := range addrs {
			if !m.allowed(a) {
				return "", ErrPrivate
			}
		}
	}
	return net.JoinHostPort(addrs[0].Unmap().String(), port), nil
}

// allowed reports whether a target may resolve to a.
func (m *Manager) allowed(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	if m.cfg.NodeAddrs != nil && slices.Contains(m.cfg.NodeAddrs(), a) {
		return false
	}
	return true
}

// parseTarget checks a push URL.
func parseTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil && u.Scheme == "srt" {
		if _, err := srtConfig(u, time.Second); err != nil {
			return nil, err
		}
		return u, nil
	}
	if err != nil || (u.Scheme != "rtmp" && u.Scheme != "rtmps") || u.Hostname() == "" {
		return nil, ErrBadTarget
	}
	if app, key := rtmp.SplitURL(u); app == "" || key == "" {
		return nil, ErrBadTarget
	}
	return u, nil
}

// Redact returns a push URL fit for logs and the API: no user info, the
// last path segment (the stream key) and every query value blanked.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if i := strings.LastIndexByte(u.Path, '/'); i >= 0 && i < len(u.Path)-1 {
		u.Path = u.Path[:i+1] + "xxx"
		u.RawPath = ""
	}
	q := u.Query()
	for k := range q {
		q[k] = []string{"xxx"}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// redactErr is err's text without the target URL's secrets.
func redactErr(err error, raw string) string {
	msg := err.Error()
	u, perr := url.Parse(raw)
	if perr != nil {
		return msg
	}
	msg = strings.ReplaceAll(msg, raw, Redact(raw))
	if u.User != nil {
		msg = strings.ReplaceAll(msg, u.User.String(), "xxx")
	}
	if u.Scheme == "srt" {
		msg = redactSRT(msg, u)
	}
	if _, key := rtmp.SplitURL(u); key != "" {
		msg = strings.ReplaceAll(msg, key, "xxx")
		if k, _, _ := strings.Cut(key, "?"); k != "" {
			msg = strings.ReplaceAll(msg, k, "xxx")
		}
	}
	return msg
}
