//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

// Package rawread makes a TCP connection's reads raw system calls.
//
// The Go runtime treats every ordinary read as a call that may block: it
// tells its monitor thread, which, when the process has been idle, wakes
// and then polls every 20 µs for a millisecond or more, preempting the
// process's own work on a busy core. A live stream's connections are read
// on every packet, so that happens on every packet. The sockets are
// non-blocking, so a raw read never blocks: it returns what is there or
// EAGAIN, and the read then waits in the runtime's poller as usual, with
// the connection's deadlines.
package rawread

import (
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// Conn is a TCP connection whose reads are raw system calls. Only reads
// change; a Conn is used by one reader at a time.
type Conn struct {
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
	limit   int       // when positive, the most bytes one read takes (SetLimit)
}

// New returns conn with raw reads, or conn itself when it is not a TCP
// connection. With stamp, each read also brings back when the kernel
// received its data (SO_TIMESTAMPNS): see Received.
func New(conn net.Conn, stamp bool) net.Conn {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return conn
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return conn
	}
	c := &Conn{Conn: conn, raw: raw}
	if stamp {
		raw.Control(func(fd uintptr) {
			c.stamped = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1) == nil
		})
		c.msg.Control = &c.oob[0]
	}
	c.readFn = func(fd uintptr) bool {
		for {
			if c.stamped {
				c.msg.SetControllen(len(c.oob))
			}
			c.n, _, c.errno = syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
			if c.errno != syscall.EINTR {
				return c.errno != syscall.EAGAIN
			}
		}
	}
	return c
}

func (c *Conn) Read(b []byte) (int, error) {
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
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }

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

// Received returns when the kernel received the data of conn's last read,
// or now when it cannot tell: conn is not a stamped Conn, or the data came
// before the kernel had turned stamping on (it does so a moment after the
// first socket asks).
func Received(conn net.Conn) time.Time {
	if c, ok := conn.(*Conn); ok && !c.rx.IsZero() {
		return c.rx
	}
	return time.Now()
}

// SetLimit bounds the bytes each read of conn takes, if conn is a Conn;
// 0 lifts the bound.
func SetLimit(conn net.Conn, n int) {
	if c, ok := conn.(*Conn); ok {
		c.limit = n
	}
}
