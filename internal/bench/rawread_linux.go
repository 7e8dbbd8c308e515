//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package bench

import (
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// fastReads makes conn's reads raw system calls that also bring back the
// time the kernel received the data. The load generator reads thousands of
// sockets from one core:
//
//   - With ordinary reads the Go runtime treats every read as a call that
//     may block, and its monitor keeps handing the processor to another
//     thread in the middle of one. Reads here still wait in the runtime's
//     poller, with deadlines, but cost the load generator less.
//   - A player's goroutine may wait its turn to run for tens of
//     milliseconds while a burst of joins saturates the load generator's
//     core. Timing frames by when the kernel received them (SO_TIMESTAMPNS)
//     measures the server and the network, not that wait.
func fastReads(conn net.Conn) net.Conn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	c := &rawReadConn{Conn: conn, raw: raw, limit: firstReads}
	raw.Control(func(fd uintptr) {
		c.stamped = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1) == nil
	})
	c.msg.Control = &c.oob[0]
	c.msg.SetControllen(len(c.oob))
	c.readFn = func(fd uintptr) bool {
		for {
			c.msg.Controllen = uint64(len(c.oob))
			c.n, _, c.errno = syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
			if c.errno != syscall.EINTR {
				return c.errno != syscall.EAGAIN
			}
		}
	}
	return c
}

type rawReadConn struct {
	net.Conn
	raw     syscall.RawConn
	stamped bool // the kernel stamps what it receives
	iov     syscall.Iovec
	msg     syscall.Msghdr
	oob     [64]byte
	n       uintptr
	errno   syscall.Errno
	readFn  func(fd uintptr) bool
	rx      time.Time // when the kernel received the data of the last read
	limit   int       // bytes a read takes at most; 0: no limit
}

// firstReads bounds each read until the first picture has arrived: a read
// is stamped with the arrival of the newest data it took, so reading the
// first picture in small steps keeps data sent after it from dating it.
const firstReads = 8 << 10

// readAll lifts conn's bound on a read.
func readAll(conn net.Conn) {
	if c, ok := conn.(*rawReadConn); ok {
		c.limit = 0
	}
}

func (c *rawReadConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if c.limit > 0 && len(b) > c.limit {
		b = b[:c.limit]
	}
	c.iov.Base = &b[0]
	c.iov.SetLen(len(b))
	c.msg.Iov = &c.iov
	c.msg.Iovlen = 1
	err := c.raw.Read(c.readFn)
	c.iov.Base, c.msg.Iov = nil, nil
	switch {
	case err != nil:
		return 0, err
	case c.errno != 0:
		return 0, c.errno
	case c.n == 0:
		return 0, io.EOF
	}
	c.rx = time.Time{}
	if c.stamped {
		c.rx = rxStamp(c.oob[:c.msg.Controllen])
	}
	return int(c.n), nil
}

// SyscallConn returns the socket, for options such as SO_RCVLOWAT.
func (c *rawReadConn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }

// rxStamp returns the SCM_TIMESTAMPNS time in a control message, or zero.
func rxStamp(oob []byte) time.Time {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(syscall.Timespec{})) {
			ts := (*syscall.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Unix())
		}
	}
	return time.Time{}
}

// received returns when the kernel received the data of conn's last read,
// or now when it cannot tell.
func received(conn net.Conn) time.Time {
	if c, ok := conn.(*rawReadConn); ok && !c.rx.IsZero() {
		return c.rx
	}
	return time.Now()
}
