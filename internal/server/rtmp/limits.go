package rtmp

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/connlimit"
)

// limits is the server's connection limits' state.
type limits struct {
	perIP             *connlimit.PerIP
	logs              connlimit.LogLimiter // refusals: at most one line a second per reason
	refusedTotal      atomic.Uint64
	handshakeTimeouts atomic.Uint64
}

// Refusals returns the counts of connections the limits have closed.
func (s *Server) Refusals() connlimit.Refusals {
	return connlimit.Refusals{
		MaxConnections:   s.limits.refusedTotal.Load(),
		PerIP:            s.limits.perIP.Refused(),
		HandshakeTimeout: s.limits.handshakeTimeouts.Load(),
	}
}

// admit counts conn, the accepted nc seen through the PROXY protocol, under
// its client address while it waits to publish or play, and reports
// whether that address is within MaxConnectionsPerIP. The slot is the
// connection's: release leaves it.
func (s *Server) admit(nc, conn net.Conn) (*connlimit.Slot, bool) {
	ip := connlimit.AddrOf(conn.RemoteAddr())
	refused := func(msg string) {
		s.limits.logs.Log(s.log, slog.LevelWarn, "per-ip", msg,
			"remote", conn.RemoteAddr().String(), "max_per_ip", s.limits.perIP.Max())
	}
	slot, ok := s.limits.perIP.Enter(ip, connlimit.Grace(s.cfg.HandshakeTimeout), func() {
		nc.Close()
		refused("connection closed: too many waiting connections from one address")
	})
	if !ok {
		refused("connection refused: too many waiting connections from one address")
		return nil, false
	}
	s.mu.Lock()
	_, ok = s.conns[nc]
	if ok {
		s.conns[nc] = slot // release leaves it
	}
	s.mu.Unlock()
	if !ok {
		slot.Leave() // already released: never happens
	}
	return slot, true
}

// earliest returns the earlier of two times.
func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// setDeadline sets nc's deadline for the next read and the writes
// answering it. A deadline later than the one set by less than the slack
// (deadlineSlack, or an eighth of the read timeout if that is less) is
// left as it is: a publisher's messages come every few milliseconds, and
// moving the deadline costs the runtime two timer updates each time.
func (c *conn) setDeadline() {
	d := c.deadline()
	slack := min(deadlineSlack, c.srv.cfg.ReadTimeout/8)
	if d.Before(c.dl) || d.Sub(c.dl) >= slack {
		c.dl = d
		c.nc.SetDeadline(d)
	}
}

// deadlineSlack bounds how much earlier than ReadTimeout after the last
// message a connection's deadline may come.
const deadlineSlack = 100 * time.Millisecond

// deadline is the connection's next read and write deadline: ReadTimeout
// from now, and until the session has started publishing, no later than
// HandshakeTimeout after the connection was accepted.
func (c *conn) deadline() time.Time {
	d := time.Now().Add(c.srv.cfg.ReadTimeout)
	if c.pub != nil {
		c.published = true
	}
	if !c.published {
		d = earliest(d, c.handshakeEnd)
	}
	return d
}

// handshakeTimedOut reports whether err is the connection running out of
// its HandshakeTimeout before publishing or playing, and if so logs it
// (at most once a second) and counts it.
func (c *conn) handshakeTimedOut(err error) bool {
	if c.published || c.pub != nil || !errors.Is(err, os.ErrDeadlineExceeded) || time.Now().Before(c.handshakeEnd) {
		return false
	}
	c.srv.limits.handshakeTimeouts.Add(1)
	c.limited("handshake-timeout", "connection closed: handshake timeout", "timeout", c.srv.cfg.HandshakeTimeout.String())
	return true
}

// limited logs a connection's message at most once a second per reason.
func (c *conn) limited(reason, msg string, args ...any) {
	if ok, n := c.srv.limits.logs.Allow(reason); ok {
		if n > 0 {
			args = append(args, "suppressed", n)
		}
		c.log.Info(msg, args...)
	}
}

// SetMaxConnectionsPerIP changes Config.MaxConnectionsPerIP (a reload):
// connections accepted from now on meet the new limit.
func (s *Server) SetMaxConnectionsPerIP(n int) { s.limits.perIP.SetMax(n) }
