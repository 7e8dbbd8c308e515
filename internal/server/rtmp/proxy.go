package rtmp

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/proxyproto"
)

// proxiedConn is a connection from a trusted proxy: its remote address is
// the client's from the PROXY protocol header, and a byte read ahead to
// look for that header is read again first. It embeds the TCP connection,
// so the sender still writes to the socket directly.
type proxiedConn struct {
	*net.TCPConn
	remote net.Addr
	ahead  []byte
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

func (c *proxiedConn) Read(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// trusted reports whether addr is one of the configured proxies.
func (s *Server) trusted(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || len(s.cfg.TrustedProxies) == 0 {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// unproxy returns the connection to serve: nc itself, or, from a trusted
// proxy, nc seen through the PROXY protocol header it may start with. A
// header from anyone else is not looked for: it fails the RTMP handshake.
// The header must arrive by deadline.
func (s *Server) unproxy(nc net.Conn, deadline time.Time) (net.Conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok || !s.trusted(nc.RemoteAddr()) {
		return nc, nil
	}
	nc.SetReadDeadline(earliest(deadline, time.Now().Add(s.cfg.ReadTimeout)))
	defer nc.SetReadDeadline(time.Time{})
	var first [1]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		return nil, fmt.Errorf("read from proxy: %w", err)
	}
	if !proxyproto.Starts(first[0]) {
		return &proxiedConn{TCPConn: tc, remote: nc.RemoteAddr(), ahead: first[:]}, nil
	}
	h, err := proxyproto.Read(io.MultiReader(bytes.NewReader(first[:]), nc))
	if err != nil {
		return nil, err
	}
	remote := nc.RemoteAddr()
	if h.Source != nil {
		remote = h.Source
	}
	return &proxiedConn{TCPConn: tc, remote: remote}, nil
}
