//go:build unix

package main

import (
	"log/slog"
	"syscall"

	"github.com/meshcast/meshcast/internal/config"
)

// fileReserve is the descriptors kept for what is not an RTMP connection:
// HTTP clients, listeners, Redis, webhooks.
const fileReserve = 1024

// checkFileLimit raises the soft limit on open files to the hard limit
// (Go does so at start-up on most systems; this covers the rest) and warns
// when it is still too low for --max-connections: past it, accept fails
// and clients see refused connections instead of meshcast's own limits.
func checkFileLimit(cfg config.Config, log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = raised.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	if need := uint64(cfg.MaxConnections) + fileReserve; uint64(lim.Cur) < need {
		log.Warn("the open file limit is below what --max-connections needs: raise it (ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=) or lower --max-connections",
			"limit", uint64(lim.Cur), "max_connections", cfg.MaxConnections, "want", need)
	}
}
