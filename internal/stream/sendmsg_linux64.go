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

// writev makes one non-blocking vectored write of bufs to raw. It returns
// the bytes written; syscall.EAGAIN means the socket took none or part.
// *iov is scratch space kept by the caller.
func writev(raw syscall.RawConn, bufs [][]byte, iov *[]syscall.Iovec) (int64, error) {
	v := (*iov)[:0]
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
	*iov = v
	if len(v) == 0 {
		return 0, nil
	}
	// sendmsg rather than writev: it skips the file layer's bookkeeping.
	msg := syscall.Msghdr{Iov: &v[0]}
	msg.Iovlen = uint64(len(v))
	var n uintptr
	var errno syscall.Errno
	err := raw.Write(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.Syscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), syscall.MSG_NOSIGNAL)
			if errno != syscall.EINTR {
				return true
			}
		}
	})
	clear(v) // drop references to the packets
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int64(n), nil
}

// maxDrainReads bounds the reads of one drain: a viewer that floods us
// costs a few system calls a second, and then its own send buffer fills.
const maxDrainReads = 8

// drain reads and discards, without blocking, what the peer has sent into
// buf. It returns ErrHungUp once the peer has closed or reset the
// connection.
func drain(raw syscall.RawConn, buf []byte) error {
	for range maxDrainReads {
		var n uintptr
		var errno syscall.Errno
		err := raw.Read(func(fd uintptr) bool {
			n, _, errno = syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
				syscall.MSG_DONTWAIT, 0, 0)
			return true
		})
		switch {
		case err != nil:
			return err
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
