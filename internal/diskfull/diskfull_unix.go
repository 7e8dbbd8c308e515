//go:build unix

package diskfull

import "syscall"

var codes = []code{
	{syscall.ENOSPC, "ENOSPC"}, // no space left on device
	{syscall.EDQUOT, "EDQUOT"}, // disk quota exceeded
	{syscall.EFBIG, "EFBIG"},   // file too large: RLIMIT_FSIZE, or the file system's own limit
}
