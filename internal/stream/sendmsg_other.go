//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x))

package stream

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: elsewhere than Linux every viewer gets a goroutine
// of its own.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

type sockIO struct{}

func newSockIO() *sockIO { return &sockIO{} }

func (*sockIO) writev(syscall.RawConn, [][]byte) (int64, error) { return 0, syscall.ENOTSUP }

func (*sockIO) drain(syscall.RawConn, []byte) error { return syscall.ENOTSUP }

func (*sockIO) sendfile(syscall.RawConn, int, int64, int64) (int64, error) {
	return 0, syscall.ENOTSUP
}

func memfdCreate(string) (int, error) { return -1, syscall.ENOTSUP }

func pwriteAll(int, []byte, int64) error { return syscall.ENOTSUP }

func punchHole(int, int64, int64) error { return syscall.ENOTSUP }

func closeFd(int) {}
