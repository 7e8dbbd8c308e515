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
