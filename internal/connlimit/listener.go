package connlimit

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// Proto names the listener in refusal logs ("http").
	Proto string
	// Grace is how long a new connection may wait for its first request
	// before it counts against its address's limit (see Slot).
	Grace time.Duration
	// Trusted are load balancers and proxies that say who their clients
	// are (X-Forwarded-For): their connections are not limited here.
	Trusted []netip.Prefix
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Listener is a net.Listener whose accepted connections count against a
// per-address limit while they wait (see Slot): it closes at once each
// connection whose address holds the limit, and the ones that age in past
// it. It counts the TCP peer, unless that is a trusted proxy.
type Listener struct {
	net.Listener
	perIP *PerIP
	cfg   ListenerConfig
	logs  LogLimiter
}

// NewListener limits the connections ln accepts per peer address with
// perIP, which listeners may share (HTTP and HTTPS); a nil perIP limits
// nothing. Refusals are logged at most once a second.
func NewListener(ln net.Listener, perIP *PerIP, cfg ListenerConfig) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Listener{Listener: ln, perIP: perIP, cfg: cfg}
}

// Accept returns the next connection within the limit; it closes the ones
// past it itself.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := AddrOf(c.RemoteAddr())
		if l.trusted(ip) {
			return c, nil
		}
		slot, ok := l.perIP.Enter(ip, l.cfg.Grace, func() {
			c.Close()
			l.refused(c, "connection closed: too many waiting connections from one address")
		})
		if !ok {
			c.Close()
			l.refused(c, "connection refused: too many waiting connections from one address")
			continue
		}
		return track(c, slot), nil
	}
}

func (l *Listener) refused(c net.Conn, msg string) {
	l.logs.Log(l.cfg.Logger, slog.LevelWarn, "per-ip", msg,
		"protocol", l.cfg.Proto, "remote", c.RemoteAddr().String(), "max_per_ip", l.perIP.Max())
}

func (l *Listener) trusted(ip netip.Addr) bool {
	for _, p := range l.cfg.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Refused returns how many connections the limit has closed.
func (l *Listener) Refused() uint64 { return l.perIP.Refused() }

// Open returns the connections counted for ip.
func (l *Listener) Open(ip netip.Addr) int { return l.perIP.Open(ip) }

// track returns c with its slot, and a Close that also leaves the slot. A
// TCP connection stays a *net.TCPConn underneath (embedded), so what looks
// for its methods (SyscallConn for vectored writes, ReadFrom, CloseWrite)
// still finds them.
func track(c net.Conn, slot *Slot) net.Conn {
	if slot == nil {
		return c
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tc, slot: slot}
	}
	return &conn{Conn: c, slot: slot}
}

type tcpConn struct {
	*net.TCPConn
	slot *Slot
}

func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	c.slot.Leave() // once: a slot left stays left
	return err
}

type conn struct {
	net.Conn
	slot *Slot
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.slot.Leave() // once: a slot left stays left
	return err
}

// SlotOf returns the slot of a connection a Listener accepted, also seen
// through TLS; nil for any other.
func SlotOf(c net.Conn) *Slot {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	switch c := c.(type) {
	case *tcpConn:
		return c.slot
	case *conn:
		return c.slot
	}
	return nil
}

type slotKey struct{}

// ConnContext is an http.Server's ConnContext: it keeps the connection's
// slot for Requests.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if s := SlotOf(c); s != nil {
		return context.WithValue(ctx, slotKey{}, s)
	}
	return ctx
}

// Requests marks a request's connection busy once its headers have been
// read: a connection serving a request (a live HTTP-FLV body, a blocking
// LL-HLS reload) no longer counts. The server needs ConnContext.
func Requests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s, ok := r.Context().Value(slotKey{}).(*Slot); ok {
			s.Busy()
		}
		next.ServeHTTP(w, r)
	})
}

// IdleState returns an http.Server's ConnState that has a keep-alive
// connection between requests wait again: it counts once it has had no
// request for idle.
func IdleState(idle time.Duration) func(net.Conn, http.ConnState) {
	return func(c net.Conn, st http.ConnState) {
		if st == http.StateIdle {
			SlotOf(c).Wait(idle)
		}
	}
}
