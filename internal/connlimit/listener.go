package connlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// Listener is a net.Listener that closes, at once, each accepted
// connection whose peer address already holds the per-address maximum. It
// counts the TCP peer: behind a proxy or load balancer, that is the proxy.
type Listener struct {
	net.Listener
	perIP *PerIP
	log   *slog.Logger
	logs  LogLimiter
	proto string
}

// NewListener limits the connections ln accepts per peer address with
// perIP, which listeners may share (HTTP and HTTPS); a nil perIP limits
// nothing. proto names the listener in refusal logs ("http"). Refusals are
// logged to log at most once a second.
func NewListener(ln net.Listener, perIP *PerIP, proto string, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.Default()
	}
	return &Listener{Listener: ln, perIP: perIP, log: log, proto: proto}
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
		if !l.perIP.Acquire(ip) {
			c.Close()
			l.logs.Log(l.log, slog.LevelWarn, "per-ip", "connection refused: too many connections from one address",
				"protocol", l.proto, "remote", c.RemoteAddr().String(), "max_per_ip", l.perIP.Max())
			continue
		}
		return track(c, func() { l.perIP.Release(ip) }, ip.IsValid() && l.perIP.Max() > 0), nil
	}
}

// Refused returns how many connections the limit has closed.
func (l *Listener) Refused() uint64 { return l.perIP.Refused() }

// Open returns the connections counted for ip.
func (l *Listener) Open(ip netip.Addr) int { return l.perIP.Open(ip) }

// track returns c with a Close that also runs release, once. A TCP
// connection stays a *net.TCPConn underneath (embedded), so what looks for
// its methods (SyscallConn for vectored writes, ReadFrom, CloseWrite)
// still finds them.
func track(c net.Conn, release func(), counted bool) net.Conn {
	if !counted {
		return c
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tc, release: release}
	}
	return &conn{Conn: c, release: release}
}

type tcpConn struct {
	*net.TCPConn
	once    sync.Once
	release func()
}

func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(c.release)
	return err
}

type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
