//go:build !unix

package bench

import "net"

// setLowat does nothing where there is no receive low-water mark: the
// player reads eagerly.
func setLowat(net.Conn, int) {}
