// Package source pulls streams from sources that do not push: IP cameras
// over RTSP, other servers over RTMP, HTTP-FLV, HLS or SRT. A source is published on
// the node that pulls it, through the hub like any publisher, so its claim
// makes exactly one node of the cluster pull it. On demand (the default)
// the first viewer on any node starts it — the node without it relays as
// usual — and it stops after its idle time without viewers; always-on
// sources are pulled from the node's start, restarted with backoff.
package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Protocol is the publisher protocol of pulled sources.
const Protocol = "source"

// Modes of a source.
const (
	OnDemand = "on-demand"
	Always   = "always"
)

// Backoff bounds of a source that keeps failing.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// Source is one pulled stream.
type Source struct {
	URL           string // rtsp://, rtsps://, rtmp://, rtmps://, http(s)://....flv, http(s)://....m3u8, srt://
	Mode          string // OnDemand (the default) or Always
	RTSPTransport string // tcp (the default) or udp
}

// Hub is what sources need of the node's streams.
type Hub interface {
	Publish(name streamname.Name, info stream.PublisherInfo) (*stream.Publisher, error)
}

// PacketWriter takes a source's packets.
type PacketWriter interface {
	WritePacket(p *media.Packet) error
}

// Config configures the sources.
type Config struct {
	// Sources are the node's sources by name.
	Sources map[streamname.Name]Source
	// RTSP pulls an rtsp:// or rtsps:// URL into w until ctx ends or it
	// fails (the RTSP endpoint's client); nil: no RTSP sources.
	RTSP func(ctx context.Context, url, transport string, w PacketWriter) error
	// Idle stops an on-demand source without viewers this long. Defaults
	// to 30s.
	Idle time.Duration
	// Timeout bounds connecting and each wait for the source's packets.
	// Defaults to 10s.
	Timeout time.Duration
	// NodeID names this node in the sources' status; nil: none.
	NodeID func() string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Manager runs the node's sources.
type Manager struct {
	cfg Config
	hub Hub
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	tallies map[streamname.Name]*tally // one per source, fixed at New

	mu      sync.Mutex
	running map[streamname.Name]*run // the on-demand sources pulled here
}

// run is an on-demand source being pulled, under Manager.mu.
type run struct {
	stopping bool // it had no viewers and is ending
	again    bool // a viewer came while it was ending: start it again
}

// New returns the sources of cfg over h; Start begins the always-on ones.
func New(cfg Config, h Hub) *Manager {
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, hub: h, log: cfg.Logger.With("component", "source"), ctx: ctx, cancel: cancel,
		tallies: make(map[streamname.Name]*tally, len(cfg.Sources)), running: map[streamname.Name]*run{}}
	for name := range cfg.Sources {
		m.tallies[name] = &tally{state: Idle}
	}
	return m
}

// Has reports whether name is a source: its only publisher is its pull.
func (m *Manager) Has(name streamname.Name) bool {
	_, ok := m.cfg.Sources[name]
	return ok
}

// Start begins pulling the always-on sources, each where it can claim it.
func (m *Manager) Start() {
	for name, src := range m.cfg.Sources {
		if src.Mode == Always {
			m.wg.Go(func() { m.always(name, src) })
		}
	}
}

// Open starts pulling the on-demand source name here for a viewer, unless
// it runs already. It fails when another node holds the source (the
// caller relays it from there) or this node cannot claim it.
func (m *Manager) Open(name streamname.Name) error {
	src, ok := m.cfg.Sources[name]
	if !ok {
		return fmt.Errorf("%s is not a source", name)
	}
	m.mu.Lock()
	if r := m.running[name]; r != nil {
		r.again = r.again || r.stopping
		m.mu.Unlock()
		return nil
	}
	m.running[name] = &run{}
	m.mu.Unlock()
	pub, err := m.hub.Publish(name, stream.PublisherInfo{Protocol: Protocol, RemoteAddr: Redact(src.URL)})
	if err != nil {
		m.mu.Lock()
		delete(m.running, name)
		m.mu.Unlock()
		return err
	}
	m.log.Info("source started for a viewer", "stream", name, "url", Redact(src.URL))
	t := m.tallies[name]
	t.set(Connecting, true)
	m.wg.Go(func() {
		defer m.done(name, pub.Stream())
		defer t.set(Idle, false)
		defer pub.Close()
		ctx, cancel := context.WithCancel(m.ctx)
		defer cancel()
		idle := make(chan struct{})
		go func() { defer close(idle); m.watchIdle(ctx, cancel, name, pub.Stream()) }()
		defer func() { cancel(); <-idle }()
		m.pullLoop(ctx, name, src, pub)
	})
	return nil
}

// done forgets the on-demand source name once its pull into s has ended,
// and starts it again when a viewer came while it was ending: one asked
// for it then (Open), or one joined s before its publisher left.
func (m *Manager) done(name streamname.Name, s *stream.Stream) {
	m.mu.Lock()
	r := m.running[name]
	delete(m.running, name)
	again := r != nil && r.stopping && (r.again || s.Readers() > 0)
	m.mu.Unlock()
	if again && m.ctx.Err() == nil {
		if err := m.Open(name); err != nil {
			m.log.Warn("source not started again", "stream", name, "err", err)
		}
	}
}

// stop marks the on-demand source name as ending for want of viewers,
// unless a reader of s came meanwhile.
func (m *Manager) stop(name streamname.Name, s *stream.Stream) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.Readers() > 0 {
		return false
	}
	if r := m.running[name]; r != nil {
		r.stopping = true
	}
	return true
}

// always pulls an always-on source for as long as the node runs, claiming
// it whenever no other node holds it.
func (m *Manager) always(name streamname.Name, src Source) {
	t := m.tallies[name]
	defer t.set(Idle, false)
	for m.ctx.Err() == nil {
		pub, err := m.hub.Publish(name, stream.PublisherInfo{Protocol: Protocol, RemoteAddr: Redact(src.URL)})
		if err == nil {
			m.log.Info("source started", "stream", name, "url", Redact(src.URL))
			t.set(Connecting, true)
			m.pullLoop(m.ctx, name, src, pub)
			pub.Close()
			continue
		}
		t.set(Waiting, false)
		select { // another node pulls it, or the registry is away
		case <-m.ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// pullLoop pulls src into pub until ctx ends, reconnecting with backoff;
// each new session continues the stream's timestamps from a keyframe.
func (m *Manager) pullLoop(ctx context.Context, name streamname.Name, src Source, pub *stream.Publisher) {
	t := m.tallies[name]
	backoff := minBackoff
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			pub.Restart()
			t.restart()
		}
		start := time.Now()
		err := m.session(ctx, src, pub, t)
		if ctx.Err() != nil || errors.Is(err, stream.ErrClosed) {
			return
		}
		if time.Since(start) > maxBackoff {
			backoff = minBackoff
		}
		shown := redactErr(err, src.URL)
		t.fail(shown)
		m.log.Warn("source lost; retrying", "stream", name, "url", Redact(src.URL), "err", shown, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// watchIdle ends an on-demand source once it has had no reader but its
// own for the idle time.
func (m *Manager) watchIdle(ctx context.Context, cancel context.CancelFunc, name streamname.Name, s *stream.Stream) {
	tick := time.NewTicker(min(time.Second, m.cfg.Idle/4))
	defer tick.Stop()
	since := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if s.Readers() > 0 {
				since = now
				continue
			}
			if now.Sub(since) >= m.cfg.Idle && m.stop(name, s) {
				m.log.Info("source stopped: no viewers", "stream", name, "for", m.cfg.Idle)
				cancel()
				return
			}
		}
	}
}

// Close stops every source and waits for them.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

// errStalled ends a session whose source sent nothing for the timeout.
var errStalled = errors.New("the source sent nothing")

// session pulls src into pub once, counting into t, until it fails, ctx
// ends, or the source sends no packet for the timeout (twice the timeout
// for the first, which waits for the connection too).
func (m *Manager) session(ctx context.Context, src Source, pub PacketWriter, t *tally) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cw := &countingWriter{w: pub, t: t}
	start := time.Now()
	cw.last.Store(start.UnixNano())
	stalled := make(chan struct{})
	go func() {
		defer close(stalled)
		tick := time.NewTicker(min(time.Second, m.cfg.Timeout/4))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				limit := m.cfg.Timeout
				if !cw.started.Load() {
					limit *= 2
				}
				if now.Sub(time.Unix(0, cw.last.Load())) > limit {
					cancel(fmt.Errorf("%w for %v", errStalled, limit))
					return
				}
			}
		}
	}()
	err := m.pull(ctx, src, cw)
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		err = cause
	}
	cancel(nil)
	<-stalled
	return err
}

// pull reads src into w once, until it fails or ctx ends.
func (m *Manager) pull(ctx context.Context, src Source, w PacketWriter) error {
	u, err := url.Parse(src.URL)
	if err != nil {
		return errors.New("bad source URL")
	}
	switch {
	case u.Scheme == "rtsp" || u.Scheme == "rtsps":
		if m.cfg.RTSP == nil {
			return errors.New("no RTSP client")
		}
		transport := src.RTSPTransport
		if transport == "" {
			transport = "tcp"
		}
		return m.cfg.RTSP(ctx, src.URL, transport, w)
	case u.Scheme == "rtmp" || u.Scheme == "rtmps":
		return m.pullRTMP(ctx, u, w)
	case (u.Scheme == "http" || u.Scheme == "https") && strings.HasSuffix(u.Path, ".flv"):
		return m.pullFLV(ctx, u, w)
	case (u.Scheme == "http" || u.Scheme == "https") && strings.HasSuffix(u.Path, ".m3u8"):
		return m.pullHLS(ctx, u, w)
	case u.Scheme == "srt":
		return m.pullSRT(ctx, u, w)
	}
	return fmt.Errorf("source scheme %q is not pulled", u.Scheme)
}

// pullRTMP plays an RTMP URL.
func (m *Manager) pullRTMP(ctx context.Context, u *url.URL, w PacketWriter) error {
	c, conn, key, err := rtmp.DialURL(ctx, u, (&net.Dialer{}).DialContext, m.cfg.Timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := c.Play(key); err != nil {
		return err
	}
	for {
		conn.SetReadDeadline(time.Now().Add(m.cfg.Timeout))
		msg, err := c.ReadMessage()
		if err != nil {
			return err
		}
		var p media.Packet
		switch msg.Type {
		case rtmp.TypeVideo:
			p, err = flv.ParseVideo(msg.Timestamp, msg.Payload)
		case rtmp.TypeAudio:
			p, err = flv.ParseAudio(msg.Timestamp, msg.Payload)
		default:
			continue
		}
		if err != nil {
			continue // a codec meshcast does not take: that track is dropped
		}
		if err := w.WritePacket(&p); err != nil {
			return err
		}
	}
}

// pullFLV reads an HTTP-FLV URL.
func (m *Manager) pullFLV(ctx context.Context, u *url.URL, w PacketWriter) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: m.cfg.Timeout, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the source answered %s", resp.Status)
	}
	r := flv.NewReader(resp.Body)
	if _, _, err := r.ReadHeader(); err != nil {
		return err
	}
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return err
		}
		if p.Kind == media.KindData {
			continue
		}
		if err := w.WritePacket(&p); err != nil {
			return err
		}
	}
}

// Redact returns a source URL fit for logs and the API: no user info and
// no query values.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	q := u.Query()
	for k := range q {
		q[k] = []string{"xxx"}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// redactErr is err's message without the credentials of the source URL
// raw: its user info, password and query values (all but the shortest,
// which would mangle the message more than they could reveal).
func redactErr(err error, raw string) string {
	if err == nil {
		return ""
	}
	msg := strings.ReplaceAll(err.Error(), raw, Redact(raw))
	u, perr := url.Parse(raw)
	if perr != nil {
		return msg
	}
	if u.RawQuery != "" {
		msg = strings.ReplaceAll(msg, u.RawQuery, strings.TrimPrefix(Redact("?"+u.RawQuery), "?"))
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= 4 {
				msg = strings.ReplaceAll(msg, url.QueryEscape(v), "xxx")
				msg = strings.ReplaceAll(msg, v, "xxx")
			}
		}
	}
	if u.User != nil {
		// net/http shows user info as "NAME:***@".
		name := u.User.Username()
		for _, ui := range []string{u.User.String() + "@", name + ":***@", name + "@"} {
			msg = strings.ReplaceAll(msg, ui, "")
		}
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxx")
		}
	}
	return msg
}
