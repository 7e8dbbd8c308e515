//go:build !unix

package ffproc

import (
	"os"
	"syscall"
)

// groupAttr starts a process as it is: without process groups, stopping
// it reaches only the process itself.
func groupAttr() *syscall.SysProcAttr { return nil }

// stopGroup kills p: there is no signal asking it to finish its outputs.
func stopGroup(p *os.Process, kill bool) { p.Kill() }
