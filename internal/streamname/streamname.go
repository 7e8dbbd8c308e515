// Package streamname validates stream names, "APP/STREAM": the identifier
// every part of meshcast shares, from RTMP URLs to Redis keys and file
// paths. It imports nothing of meshcast's, so any package may use it.
package streamname

import (
	"errors"
	"fmt"
	"strings"
)

// Name identifies a live stream on a node: "APP/STREAM", as in
// rtmp://host/APP/STREAM and http://host/APP/STREAM.flv.
type Name string

// Limits on the parts of a stream name. Names reach file paths, Redis keys,
// URLs and log lines, so they are restricted to a safe character set.
const (
	MaxAppLen    = 64
	MaxStreamLen = 128
)

// ErrBad is returned for stream names that are empty, too long, use
// characters outside [A-Za-z0-9_.-], start with a dot, or use a reserved app.
// So no name is a path segment of its own ("." or ".."), holds a separator
// ('/', '\'), a NUL, a control byte or an escape ('%'), or is longer than
// MaxAppLen+1+MaxStreamLen bytes. The error quotes at most 64 bytes of the
// rejected input, escaped, so it is safe in logs and responses.
var ErrBad = errors.New("invalid stream name")

// reservedApps are first path segments owned by meshcast's own HTTP routes.
var reservedApps = map[string]bool{
	"api": true, "vod": true, "play": true, "watch": true, "socket.io": true,
	"metrics": true, "healthz": true, "readyz": true, "internal": true, "ui": true,
}

// New validates app and stream and joins them into a Name.
func New(app, stream string) (Name, error) {
	if err := CheckApp(app); err != nil {
		return "", err
	}
	if err := checkPart(stream, MaxStreamLen); err != nil {
		return "", fmt.Errorf("stream %w", err)
	}
	return Name(app + "/" + stream), nil
}

// CheckApp validates the application part of a name on its own, for
// settings that name an app.
func CheckApp(app string) error {
	if err := checkPart(app, MaxAppLen); err != nil {
		return fmt.Errorf("app %w", err)
	}
	if reservedApps[strings.ToLower(app)] {
		return fmt.Errorf("app %q is reserved: %w", app, ErrBad)
	}
	return nil
}

// Parse validates "APP/STREAM".
func Parse(s string) (Name, error) {
	app, st, ok := strings.Cut(s, "/")
	if !ok {
		return "", fmt.Errorf("%q is not APP/STREAM: %w", truncate(s), ErrBad)
	}
	return New(app, st)
}

// App returns the application part of the name.
func (n Name) App() string { a, _, _ := strings.Cut(string(n), "/"); return a }

// Stream returns the stream part of the name (what OBS calls the stream key).
func (n Name) Stream() string { _, s, _ := strings.Cut(string(n), "/"); return s }

func checkPart(s string, max int) error {
	if s == "" {
		return fmt.Errorf("is empty: %w", ErrBad)
	}
	if len(s) > max {
		return fmt.Errorf("is longer than %d bytes: %w", max, ErrBad)
	}
	if s[0] == '.' {
		return fmt.Errorf("%q starts with a dot: %w", truncate(s), ErrBad)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%q has a character outside [A-Za-z0-9_.-]: %w", truncate(s), ErrBad)
		}
	}
	return nil
}

// truncate keeps rejected input short and printable in error messages.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
