//go:build !unix

package main

import (
	"log/slog"

	"github.com/meshcast/meshcast/internal/config"
)

func checkFileLimit(config.Config, *slog.Logger) {}
