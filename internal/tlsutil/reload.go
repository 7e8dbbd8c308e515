// Package tlsutil serves a certificate and key from PEM files, reloaded
// when the files change.
package tlsutil

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// checkInterval is the least time between two looks at the files.
const checkInterval = time.Second

// Reloader hands out the certificate of a certificate file and a key file
// (see tls.LoadX509KeyPair), loading them again when either file's
// modification time, size or identity changes. A changed pair that does not
// load (half written, mismatched) is logged, and the previous certificate
// stays in use.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	interval          time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]os.FileInfo // of the files cert was loaded from
	failed  [2]os.FileInfo // of the files that last failed to load
	missing bool           // a file could not be looked at
	checked time.Time
}

// NewReloader loads the certificate and key, failing if they do not load.
// log defaults to slog.Default().
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log.With("component", "tls"), interval: checkInterval}
	st, err := r.stat()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", certFile, keyFile, err)
	}
	r.cert, r.stamp, r.checked = &cert, st, time.Now()
	r.log.Info("TLS certificate loaded", certAttrs(&cert)...)
	return r, nil
}

// Config returns a server configuration (TLS 1.2 or newer) whose
// certificate is the reloader's.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// GetCertificate returns the current certificate, first reloading the
// files if they changed and were not looked at within the last second.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.interval {
		r.checked = now
		r.reload()
	}
	return r.cert, nil
}

// reload loads the files again if they changed since the last load or the
// last failed attempt. It runs with r.mu held.
func (r *Reloader) reload() {
	st, err := r.stat()
	if err != nil {
		if !r.missing { // warn once, not every second
			r.missing = true
			r.log.Warn("TLS certificate not reloaded: keeping the previous one", "err", err)
		}
		return
	}
	r.missing = false
	if same(st, r.stamp) || same(st, r.failed) {
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = st
		r.log.Warn("TLS certificate not reloaded: keeping the previous one", "cert", r.certFile, "key", r.keyFile, "err", err)
		return
	}
	r.cert, r.stamp, r.failed = &cert, st, [2]os.FileInfo{}
	r.log.Info("TLS certificate reloaded", certAttrs(&cert)...)
}

func (r *Reloader) stat() ([2]os.FileInfo, error) {
	var st [2]os.FileInfo
	for i, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return st, err
		}
		st[i] = fi
	}
	return st, nil
}

// same reports whether a and b describe the same, unchanged files.
func same(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) ||
			!a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

// certAttrs describes a certificate for the log: public facts only.
func certAttrs(c *tls.Certificate) []any {
	if c.Leaf == nil {
		return nil
	}
	return []any{"subject", c.Leaf.Subject.String(), "dns", c.Leaf.DNSNames,
		"serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339)}
}
