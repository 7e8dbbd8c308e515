//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x))

package bench

import (
	"net"
	"time"
)

// fastReads returns conn: elsewhere reads are the runtime's own.
func fastReads(conn net.Conn) net.Conn { return conn }

// received returns now: elsewhere the kernel's receive time is not read.
func received(net.Conn) time.Time { return time.Now() }

// readAll does nothing: elsewhere reads are not bounded.
func readAll(net.Conn) {}
