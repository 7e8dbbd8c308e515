//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

// Package rawio makes a TCP connection's reads and writes raw system calls.
//
// The Go runtime treats every ordinary read or write as a call that may
// block. It tells its monitor thread, which, when the process has been idle,
// wakes and then polls every 20 µs for a millisecond or more, preempting
// the process's own work on a busy core; and a call that takes longer than
// the monitor's tick loses the goroutine its processor, so that it queues
// again behind everything else runnable when the call returns. A live
// stream's connections are read on every packet, and a joining player's
// session is a handful of reads and writes that a burst of joins makes
// slow exactly when they matter. The sockets are non-blocking, so a raw
// call never blocks: it does what it can or returns EAGAIN, and the
// connection then waits in the runtime's poller as usual, with its
// deadlines.
package rawio

import (
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// Conn is a TCP connection whose reads and writes are raw system calls. A
// Conn is used by one reader and one writer at a time.
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

	w   *Sendmsg // the write side
	one [1][]byte
}

// New returns conn with raw reads and writes, or conn itself when it is
// not a TCP connection. With stamp, each read also brings back when the kernel
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
	c := &Conn{Conn: conn, raw: raw, w: NewSendmsg()}
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

// Write writes b whole, waiting in the runtime's poller (up to the write
// deadline) while the socket is full.
func (c *Conn) Write(b []byte) (int, error) {
	c.one[0] = b
	n, err := c.WriteBuffers(c.one[:])
	c.one[0] = nil
	return int(n), err
}

// WriteBuffers writes bufs whole, in order, with vectored writes: as one
// system call when the socket takes it all. It may change bufs' elements.
func (c *Conn) WriteBuffers(bufs [][]byte) (int64, error) {
	var total int64
	for len(bufs) > 0 {
		n, err := c.w.Write(c.raw, bufs, true)
		total += n
		if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			return total, err
		}
		bufs = Consume(bufs, n)
	}
	return total, nil
}

// MaxIov bounds the buffers one system call takes (the kernel's IOV_MAX).
const MaxIov = 1024

// Sendmsg makes vectored writes to sockets as raw sendmsg system calls.
// Its scratch space and callback are made once, so a write allocates
// nothing. It is used by one goroutine at a time.
type Sendmsg struct {
	iov   []syscall.Iovec
	msg   syscall.Msghdr
	n     uintptr
	errno syscall.Errno
	wait  bool
	fn    func(fd uintptr) bool
}

// NewSendmsg returns a Sendmsg.
func NewSendmsg() *Sendmsg {
	s := &Sendmsg{}
	s.fn = func(fd uintptr) bool {
		for {
			s.n, _, s.errno = syscall.RawSyscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.msg)), syscall.MSG_NOSIGNAL)
			if s.errno != syscall.EINTR {
				return !s.wait || s.errno != syscall.EAGAIN
			}
		}
	}
	return s
}

// Write makes one vectored write of bufs' first MaxIov non-empty buffers
// to raw and returns the bytes written. With wait, a socket that takes
// nothing is waited for in the runtime's poller, up to its write deadline;
// without, syscall.EAGAIN says the socket took nothing.
func (s *Sendmsg) Write(raw syscall.RawConn, bufs [][]byte, wait bool) (int64, error) {
	v := s.iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if len(v) == MaxIov {
			break
		}
		v = append(v, syscall.Iovec{Base: &b[0]})
		v[len(v)-1].SetLen(len(b))
	}
	s.iov = v
	if len(v) == 0 {
		return 0, nil
	}
	// sendmsg rather than writev: it skips the file layer's bookkeeping.
	s.msg = syscall.Msghdr{Iov: &v[0]}
	s.msg.Iovlen = uint64(len(v))
	s.wait = wait
	err := raw.Write(s.fn)
	clear(v) // hold no caller's memory
	s.msg.Iov = nil
	if err != nil {
		return 0, err
	}
	if s.errno != 0 {
		return 0, s.errno
	}
	return int64(s.n), nil
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

// WriteBuffers writes bufs whole to conn with raw vectored writes when
// conn is a TCP connection, else as net.Buffers do.
func WriteBuffers(conn net.Conn, bufs [][]byte) (int64, error) {
	if c, ok := New(conn, false).(*Conn); ok {
		return c.WriteBuffers(bufs)
	}
	nb := net.Buffers(bufs)
	return nb.WriteTo(conn)
}
