//go:build unix

package bench

import (
	"net"
	"syscall"
)

// setLowat sets the socket's receive low-water mark: Linux then wakes a
// reader only when n bytes are waiting. Where it fails the player simply
// reads eagerly.
func setLowat(conn net.Conn, n int) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	})
}
