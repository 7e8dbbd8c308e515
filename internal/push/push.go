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

// Config configures the pushes.
type Config struct {
	// Targets returns the configured push URLs of a stream, {app} and
	// {stream} already replaced; nil: none.
	Targets func(name streamname.Name) []string
	// AllowPrivate lets targets resolve to loopback and link-local
	// addresses and to the cluster's own nodes.
	AllowPrivate bool
	// NodeAddrs returns the cluster's own node addresses, which targets
	// may not resolve to; nil: none.
	NodeAddrs func() []netip.Addr
	// Timeout bounds connecting and each write. Defaults to 10s.
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

	mu     sync.Mutex
	byName map[streamname.Name][]*pusher
	added  map[streamname.Name][]target // pushes added through the API
	live   map[streamname.Name]bool
	closed bool
	wg     sync.WaitGroup
}

// target is a push's destination.
type target struct {
	id, url, source string
}

// New starts pushing the streams published on h as cfg says.
func New(cfg Config, h Hub) *Manager {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, hub: h, log: cfg.Logger.With("component", "push"),
		byName: map[streamname.Name][]*pusher{}, added: map[streamname.Name][]target{}, live: map[streamname.Name]bool{}}
	h.Subscribe(m.event)
	return m
}

// event starts a stream's pushes when it is published here, and stops
// them when it ends.
func (m *Manager) event(ev hub.Event) {
	switch ev.Type {
	case "publish":
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed || m.live[ev.Name] {
			return
		}
		m.live[ev.Name] = true
		var targets []target
		if m.cfg.Targets != nil {
			for i, u := range m.cfg.Targets(ev.Name) {
				targets = append(targets, target{id: fmt.Sprintf("config-%d", i+1), url: u, source: "config"})
			}
		}
		for _, t := range append(targets, m.added[ev.Name]...) {
			m.startLocked(ev.Name, t)
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

// startLocked starts a pusher of t. Caller holds m.mu.
func (m *Manager) startLocked(name streamname.Name, t target) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pusher{m: m, name: name, t: t, cancel: cancel, done: make(chan struct{})}
	p.state.Store("connecting")
	m.byName[name] = append(m.byName[name], p)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.done)
		p.run(ctx)
	}()
}

// Add pushes the stream name to rawURL from now on (and whenever it is
// published here again), and returns its status.
func (m *Manager) Add(name streamname.Name, rawURL string) (Status, error) {
	if _, err := parseTarget(rawURL); err != nil {
		return Status{}, err
	}
	var id [6]byte
	rand.Read(id[:])
	t := target{id: hex.EncodeToString(id[:]), url: rawURL, source: "api"}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.added[name])+len(m.byName[name]) >= MaxPerStream {
		return Status{}, ErrTooMany
	}
	m.added[name] = append(m.added[name], t)
	if m.live[name] {
		m.startLocked(name, t)
	}
	return Status{ID: t.id, Stream: string(name), Target: Redact(rawURL), Source: t.source, State: "stopped"}, nil
}

// Remove stops and forgets an API-added push of name.
func (m *Manager) Remove(name streamname.Name, id string) error {
	m.mu.Lock()
	i := slices.IndexFunc(m.added[name], func(t target) bool { return t.id == id })
	if i < 0 {
		m.mu.Unlock()
		return ErrNotFound
	}
	m.added[name] = slices.Delete(m.added[name], i, i+1)
	var stop *pusher
	ps := m.byName[name]
	if j := slices.IndexFunc(ps, func(p *pusher) bool { return p.t.id == id }); j >= 0 {
		stop = ps[j]
		m.byName[name] = slices.Delete(ps, j, j+1)
	}
	m.mu.Unlock()
	if stop != nil {
		stop.stop()
	}
	return nil
}

// List returns the pushes of name: running ones, then API-added ones
// waiting for the stream.
func (m *Manager) List(name streamname.Name) []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Status{}
	running := map[string]bool{}
	for _, p := range m.byName[name] {
		out = append(out, p.status())
		running[p.t.id] = true
	}
	for _, t := range m.added[name] {
		if !running[t.id] {
			out = append(out, Status{ID: t.id, Stream: string(name), Target: Redact(t.url), Source: t.source, State: "stopped"})
		}
	}
	return out
}

// Close stops every push and waits for them.
func (m *Manager) Close() {
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

func (p *pusher) status() Status {
	s := Status{ID: p.t.id, Stream: string(p.name), Target: Redact(p.t.url), Source: p.t.source,
		State: p.state.Load().(string), BytesSent: p.sent.Load(), Reconnects: p.reconnects.Load()}
	if e, ok := p.lastErr.Load().(string); ok {
		s.LastError = e
	}
	return s
}

// run pushes until ctx ends, reconnecting with backoff.
func (p *pusher) run(ctx context.Context) {
	log := p.m.log.With("stream", p.name, "target", Redact(p.t.url))
	backoff := MinBackoff
	for attempt := 0; ; attempt++ {
		p.state.Store("connecting")
		start := time.Now()
		err := p.once(ctx, log)
		if ctx.Err() != nil {
			p.state.Store("stopped")
			return
		}
		if time.Since(start) >= StableRun {
			backoff = MinBackoff
		}
		msg := redactErr(err, p.t.url)
		p.lastErr.Store(msg)
		p.state.Store("waiting")
		log.Warn("push broken; retrying", "err", msg, "in", backoff)
		select {
		case <-ctx.Done():
			p.state.Store("stopped")
			return
		case <-time.After(backoff):
		}
		p.reconnects.Add(1)
		backoff = min(2*backoff, MaxBackoff)
	}
}

// once connects, publishes and pushes the stream until something fails.
func (p *pusher) once(ctx context.Context, log *slog.Logger) error {
	u, err := parseTarget(p.t.url)
	if err != nil {
		return err
	}
	if u.Scheme == "srt" {
		return p.onceSRT(ctx, u, func() { p.state.Store("pushing"); log.Info("push started") })
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
	p.state.Store("pushing")
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
