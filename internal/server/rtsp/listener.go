package rtsp

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/connlimit"
)

// listener applies the server's connection limits to what gortsplib
// accepts: MaxConnections, MaxConnectionsPerIP while a connection waits,
// and HandshakeTimeout.
type listener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection within the limits; it closes the
// ones past them itself. gortsplib stops serving on an Accept error, so
// only the listener's closing is returned: other errors (out of file
// descriptors) are waited out.
func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.s.ctx.Err() != nil {
				return nil, err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.s.limited("accept", "rtsp accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-l.s.ctx.Done():
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		if c := l.s.admit(nc); c != nil {
			return c, nil
		}
	}
}

// conn is an accepted connection under the server's limits.
type conn struct {
	net.Conn
	s     *Server
	slot  *connlimit.Slot // its place while it waits, under MaxConnectionsPerIP
	timer *time.Timer     // closes it at HandshakeTimeout unless it started
	// state is waiting until whichever comes first: the connection
	// starts playing or publishing, or its handshake times out.
	state atomic.Int32
	once  sync.Once
}

// States of a conn.
const (
	connWaiting int32 = iota
	connStarted
	connTimedOut
)

// admit wraps nc under the limits, or closes it and returns nil.
func (s *Server) admit(nc net.Conn) *conn {
	remote := nc.RemoteAddr().String()
	if s.conns.Add(1) > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.refusedTotal.Add(1)
		nc.Close()
		s.limited("max-connections", "rtsp connection refused: too many connections", "remote", remote, "max", s.cfg.MaxConnections)
		return nil
	}
	c := &conn{Conn: nc, s: s}
	slot, ok := s.perIP.Enter(connlimit.AddrOf(nc.RemoteAddr()), connlimit.Grace(s.cfg.HandshakeTimeout), func() {
		nc.Close()
		s.limited("per-ip", "rtsp connection closed: too many waiting connections from one address", "remote", remote, "max_per_ip", s.perIP.Max())
	})
	if !ok {
		s.conns.Add(-1)
		nc.Close()
		s.limited("per-ip", "rtsp connection refused: too many waiting connections from one address", "remote", remote, "max_per_ip", s.perIP.Max())
		return nil
	}
	c.slot = slot
	c.timer = time.AfterFunc(s.cfg.HandshakeTimeout, func() {
		if c.state.CompareAndSwap(connWaiting, connTimedOut) {
			s.handshakeTimeouts.Add(1)
			s.limited("handshake-timeout", "rtsp connection closed: handshake timeout", "remote", remote, "timeout", s.cfg.HandshakeTimeout.String())
			nc.Close()
		}
	})
	return c
}

// started marks the connection playing or publishing: it no longer
// waits, nor times out. It reports false when the handshake timed out
// first.
func (c *conn) started() bool {
	if c == nil {
		return true // a connection the server did not accept itself
	}
	if !c.state.CompareAndSwap(connWaiting, connStarted) {
		return c.state.Load() == connStarted
	}
	c.timer.Stop()
	c.slot.Busy()
	return true
}

// Close closes the connection and gives its places up.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.timer.Stop()
		c.slot.Leave()
		c.s.conns.Add(-1)
	})
	return err
}

// connOf finds the server's conn under what gortsplib holds (a TLS
// connection wraps it); nil for anything else.
func connOf(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}
