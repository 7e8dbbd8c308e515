//go:build !unix

package testutil

// Freeze would stop the server's process; only Unix systems can (SIGSTOP).
// The tests that freeze servers need redis-sentinel, which runs on Unix.
func (s *Server) Freeze() { panic("testutil: Freeze needs a Unix system") }

// Thaw would resume a server that Freeze stopped.
func (s *Server) Thaw() { panic("testutil: Thaw needs a Unix system") }
