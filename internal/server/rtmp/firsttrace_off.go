//go:build !ttfftrace

package rtmp

import "time"

// traceFirstPictures is off: see firsttrace.go.
const traceFirstPictures = false

func traceFirstPicture(string, time.Time, time.Time, time.Time) {}
