// Package diskfull tells a write refused because the storage has no room
// left (a full file system, a quota, a file size limit) from other I/O
// errors, so that recordings and uploads can stop cleanly and say why.
package diskfull

import "errors"

// Is reports whether err, or an error it wraps, is the operating system
// refusing to grow a file for want of room: ENOSPC, EDQUOT or EFBIG (the
// process's RLIMIT_FSIZE, with SIGXFSZ ignored as Go ignores it) on Unix,
// ERROR_DISK_FULL or ERROR_HANDLE_DISK_FULL on Windows.
func Is(err error) bool { return Errno(err) != "" }

// Errno names the error that makes err a disk-full error ("ENOSPC",
// "EFBIG", ...), or returns "" when err is not one.
func Errno(err error) string {
	for _, e := range codes {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return ""
}

type code struct {
	err  error
	name string
}
