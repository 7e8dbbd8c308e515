//go:build windows

package diskfull

import "syscall"

// Windows system error codes (winerror.h).
var codes = []code{
	{syscall.Errno(112), "ERROR_DISK_FULL"},
	{syscall.Errno(39), "ERROR_HANDLE_DISK_FULL"},
}
