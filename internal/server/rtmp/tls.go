package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
)

// secure returns conn seen through TLS on an RTMPS server, after a
// handshake bounded by the read timeout; on a plain server, conn itself.
// A failed handshake is logged here.
func (s *Server) secure(conn net.Conn) (net.Conn, error) {
	if s.cfg.TLSConfig == nil {
		return conn, nil
	}
	tc := tls.Server(conn, s.cfg.TLSConfig)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReadTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		level := slog.LevelInfo
		if silent(err) || errors.Is(err, context.Canceled) {
			level = slog.LevelDebug // a health check, or the server closing
		}
		s.log.Log(s.ctx, level, "connection closed: TLS handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
		return nil, err
	}
	return tc, nil
}
