//go:build linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x)

package egress

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/meshcast/meshcast/internal/rawio"
)

// This file and sock_other.go are the package's one build-tagged pair:
// everything that touches the operating system — raw socket calls, the
// in-memory files behind wire files, system errors — is here, and the rest
// of the package calls it.

// sock is a connection's socket, written and read without blocking.
type sock struct{ raw syscall.RawConn }

// sockOf returns conn's socket for non-blocking writes; ok is false when
// conn is not a bare socket (TLS, say).
func sockOf(conn net.Conn) (sock, bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return sock{}, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return sock{}, false
	}
	return sock{raw}, true
}

// errFull is a write the socket took none or only part of.
var errFull = syscall.EAGAIN

// hungUp returns ErrHungUp for a write that failed because the viewer
// closed the connection, else err.
func hungUp(err error) error {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return ErrHungUp
	}
	return err
}

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
	sm    *rawio.Sendmsg
	buf   []byte // recvfrom's target
	file  int    // sendfile's source
	off   int64  // and where in it
	count int
	n     uintptr
	errno syscall.Errno

	recvfrom, sendfileFn func(fd uintptr) bool
}

func newSockIO() *sockIO {
	sk := &sockIO{sm: rawio.NewSendmsg()}
	sk.recvfrom = func(fd uintptr) bool {
		sk.n, _, sk.errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&sk.buf[0])), uintptr(len(sk.buf)),
			syscall.MSG_DONTWAIT, 0, 0)
		return true
	}
	sk.sendfileFn = func(fd uintptr) bool {
		for {
			sk.n, _, sk.errno = syscall.RawSyscall6(syscall.SYS_SENDFILE, fd, uintptr(sk.file), uintptr(unsafe.Pointer(&sk.off)), uintptr(sk.count), 0, 0)
			if sk.errno != syscall.EINTR {
				return true
			}
		}
	}
	return sk
}

// sendfile makes one non-blocking write to s of count bytes of file from
// off on. It returns the bytes written; errFull means the socket took none
// or part.
func (sk *sockIO) sendfile(s sock, file int, off, count int64) (int64, error) {
	sk.file, sk.off, sk.count = file, off, int(count)
	if err := s.raw.Write(sk.sendfileFn); err != nil {
		return 0, err
	}
	if sk.errno != 0 {
		return 0, sk.errno
	}
	return int64(sk.n), nil
}

// memfdCreate creates an anonymous in-memory file.
func memfdCreate(name string) (int, error) { return unix.MemfdCreate(name, unix.MFD_CLOEXEC) }

// pwriteAll writes b to fd at off. The file is in memory, so the write
// never waits on a device: it is a raw system call, like a worker's, and
// the runtime's monitor is not woken once per packet.
func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_PWRITE64, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(off), 0, 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return errno
		case n == 0:
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// punchHole releases the pages of fd's n bytes from off on.
func punchHole(fd int, off, n int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func closeFd(fd int) { unix.Close(fd) }

// writev makes one non-blocking vectored write of bufs to s. It returns
// the bytes written; errFull means the socket took none.
func (sk *sockIO) writev(s sock, bufs [][]byte) (int64, error) {
	return sk.sm.Write(s.raw, bufs, false)
}

// maxDrainReads bounds the reads of one drain: a viewer that floods us
// costs a few system calls a second, and then its own send buffer fills.
const maxDrainReads = 8

// drain reads and discards, without blocking, what the peer has sent into
// buf. It returns ErrHungUp once the peer has closed or reset the
// connection.
func (sk *sockIO) drain(s sock, buf []byte) error {
	sk.buf = buf
	defer func() { sk.buf = nil }()
	for range maxDrainReads {
		if err := s.raw.Read(sk.recvfrom); err != nil {
			return err
		}
		switch n, errno := sk.n, sk.errno; {
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
