//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x))

// Package rawio makes a TCP connection's reads and writes raw system
// calls on Linux; elsewhere they are the runtime's own.
package rawio

import (
	"net"
	"time"
)

// New returns conn.
func New(conn net.Conn, stamp bool) net.Conn { return conn }

// Received returns now: the kernel's receive time is not read here.
func Received(net.Conn) time.Time { return time.Now() }

// SetLimit does nothing here.
func SetLimit(net.Conn, int) {}

// WriteBuffers writes bufs whole to conn, as net.Buffers do.
func WriteBuffers(conn net.Conn, bufs [][]byte) (int64, error) {
	nb := net.Buffers(bufs)
	return nb.WriteTo(conn)
}
