//go:build unix

package testutil

import "syscall"

// Freeze stops the server's process (SIGSTOP), as a stalled machine
// would: its connections stay open and nothing it should send arrives.
// Thaw resumes it; Stop and Kill end a frozen server too.
func (s *Server) Freeze() { s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a server that Freeze stopped (SIGCONT).
func (s *Server) Thaw() { s.cmd.Process.Signal(syscall.SIGCONT) }
