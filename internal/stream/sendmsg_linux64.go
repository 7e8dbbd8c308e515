//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package stream

import (
	"net"
	"syscall"
	"unsafe"
)

// rawConnOf returns conn's socket for non-blocking writes, or nil.
func rawConnOf(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// maxIovecs stays under the kernel's limit on one vectored write.
const maxIovecs = 1024

// sockIO makes a worker's non-blocking socket calls. Its scratch space and
// callbacks are made once, so a call allocates nothing.
//
// The calls are raw system calls: they never block (the sockets are
// non-blocking), so the runtime need not be told a goroutine entered the
// kernel. Telling it costs more than the call saves here: with the worker
// in and out of the kernel tens of thousands of times a second, the
// runtime's monitor would keep waking every 20 µs to hand the processor to
// another thread during one of them.
type sockIO struct {
	iov   []syscall.Iovec
	msg   syscall.Msghdr
	buf   []byte // recvfrom's target
	n     uintptr
	errno syscall.Errno

	sendmsg, recvfrom func(fd uintptr) bool
}

func newSockIO() *sockIO {
	io := &sockIO{}
	io.sendmsg = func(fd uintptr) bool {
		for {
			io.n, _, io.errno = syscall.RawSyscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&io.msg)), syscall.MSG_NOSIGNAL)
			if io.errno != syscall.EINTR {
				return true
			}
		}
	}
	io.recvfrom = func(fd uintptr) bool {
		io.n, _, io.errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&io.buf[0])), uintptr(len(io.buf)),
			syscall.MSG_DONTWAIT, 0, 0)
		return true
	}
	return io
}

// writev makes one non-blocking vectored write of bufs to raw. It returns
// the bytes written; syscall.EAGAIN means the socket took none or part.
func (io *sockIO) writev(raw syscall.RawConn, bufs [][]byte) (int64, error) {
	v := io.iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if len(v) == maxIovecs {
			break
		}
		v = append(v, syscall.Iovec{Base: &b[0]})
		v[len(v)-1].SetLen(len(b))
	}
	io.iov = v
	if len(v) == 0 {
		return 0, nil
	}
	// sendmsg rather than writev: it skips the file layer's bookkeeping.
	io.msg = syscall.Msghdr{Iov: &v[0]}
	io.msg.Iovlen = uint64(len(v))
	err := raw.Write(io.sendmsg)
	clear(v) // drop references to the packets
	io.msg.Iov = nil
	if err != nil {
		return 0, err
	}
	if io.errno != 0 {
		return 0, io.errno
	}
	return int64(io.n), nil
}

// maxDrainReads bounds the reads of one drain: a viewer that floods us
// costs a few system calls a second, and then its own send buffer fills.
const maxDrainReads = 8

// drain reads and discards, without blocking, what the peer has sent into
// buf. It returns ErrHungUp once the peer has closed or reset the
// connection.
func (io *sockIO) drain(raw syscall.RawConn, buf []byte) error {
	io.buf = buf
	defer func() { io.buf = nil }()
	for range maxDrainReads {
		if err := raw.Read(io.recvfrom); err != nil {
			return err
		}
		switch n, errno := io.n, io.errno; {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return nil
		case errno == syscall.ECONNRESET:
			return ErrHungUp // closed with our data unread: the kernel reset
		case errno != 0:
			return errno
		case n == 0:
			return ErrHungUp
		case int(n) < len(buf):
			return nil
		}
	}
	return nil
}
