//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le || s390x))

package egress

import (
	"errors"
	"net"
)

// Elsewhere than Linux every viewer gets a goroutine of its own (the
// Sender's pumpConn) and streams have no wire files.

type sock struct{}

func sockOf(net.Conn) (sock, bool) { return sock{}, false }

var errFull = errors.New("egress: socket full")

var errUnsupported = errors.New("egress: not supported on this platform")

// hungUp is never reached here: only raw sockets' writes are classified.
func hungUp(err error) error { return err }

type sockIO struct{}

func newSockIO() *sockIO { return &sockIO{} }

func (*sockIO) writev(sock, [][]byte) (int64, error) { return 0, errUnsupported }

func (*sockIO) drain(sock, []byte) error { return errUnsupported }

func (*sockIO) sendfile(sock, int, int64, int64) (int64, error) { return 0, errUnsupported }

func memfdCreate(string) (int, error) { return -1, errUnsupported }

func pwriteAll(int, []byte, int64) error { return errUnsupported }

func punchHole(int, int64, int64) error { return errUnsupported }

func closeFd(int) {}
