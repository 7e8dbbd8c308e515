//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x))

// Package rawread makes a TCP connection's reads raw system calls on
// Linux; elsewhere reads are the runtime's own.
package rawread

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
