//go:build unix

package ffproc

import (
	"os"
	"syscall"
)

// groupAttr starts a process in a process group of its own, so that
// stopping it reaches whatever it started.
func groupAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// stopGroup sends the process group of p SIGTERM, or SIGKILL with kill.
func stopGroup(p *os.Process, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-p.Pid, sig)
}
