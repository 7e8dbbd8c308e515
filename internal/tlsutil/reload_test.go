package tlsutil

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
)

// pair is a self-signed certificate and its key, PEM encoded.
type pair struct {
	cert, key []byte
	serial    int64
}

func newPair(t *testing.T, cn string, serial int64) pair {
	t.Helper()
	c := testutil.NewCert(t, cn, serial, nil)
	return pair{cert: c.CertPEM, key: c.KeyPEM, serial: serial}
}

// replace swaps name's content for data the way certificate managers do:
// a new file renamed over the old one.
func replace(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// serve runs a TLS listener on loopback with cfg, completing handshakes.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// served dials addr and returns the serial number of the certificate
// presented.
func served(t *testing.T, addr string) int64 {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// logBuffer collects log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestReloaderServesChangedCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a, b, c := newPair(t, "first", 101), newPair(t, "second", 202), newPair(t, "third", 303)
	replace(t, certFile, a.cert)
	replace(t, keyFile, a.key)

	var logs logBuffer
	r, err := NewReloader(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.interval = 0 // look at the files on every handshake
	addr := serve(t, r.Config())
	if got := served(t, addr); got != a.serial {
		t.Fatalf("serving serial %d, want the first certificate's %d", got, a.serial)
	}

	replace(t, certFile, b.cert)
	replace(t, keyFile, b.key)
	if got := served(t, addr); got != b.serial {
		t.Fatalf("after the files changed: serving serial %d, want the new certificate's %d", got, b.serial)
	}

	// A new certificate whose key has not arrived yet: the pair does not
	// match, and the current certificate stays.
	replace(t, certFile, c.cert)
	if got := served(t, addr); got != b.serial {
		t.Fatalf("with a mismatched pair: serving serial %d, want the previous %d", got, b.serial)
	}
	// Garbage, and a missing file: still the same.
	replace(t, keyFile, []byte("not a key"))
	if got := served(t, addr); got != b.serial {
		t.Fatalf("with a broken key file: serving serial %d, want the previous %d", got, b.serial)
	}
	os.Remove(keyFile)
	if got := served(t, addr); got != b.serial {
		t.Fatalf("with no key file: serving serial %d, want the previous %d", got, b.serial)
	}
	// The key arrives: the new pair is served.
	replace(t, keyFile, c.key)
	if got := served(t, addr); got != c.serial {
		t.Fatalf("after the pair was completed: serving serial %d, want %d", got, c.serial)
	}

	out := logs.String()
	if !strings.Contains(out, "TLS certificate not reloaded") {
		t.Errorf("no warning about the pair that did not load:\n%s", out)
	}
	if !strings.Contains(out, "CN=third") {
		t.Errorf("the reload is not logged with the new certificate's subject:\n%s", out)
	}
	for _, secret := range [][]byte{a.key, b.key, c.key} {
		block, _ := pem.Decode(secret)
		if strings.Contains(out, "PRIVATE KEY") || bytes.Contains([]byte(out), block.Bytes) {
			t.Fatalf("key material in the log:\n%s", out)
		}
	}
}

func TestReloaderLooksAtFilesAtMostOncePerInterval(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a, b := newPair(t, "first", 1), newPair(t, "second", 2)
	replace(t, certFile, a.cert)
	replace(t, keyFile, a.key)
	r, err := NewReloader(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.interval = time.Hour
	addr := serve(t, r.Config())
	replace(t, certFile, b.cert)
	replace(t, keyFile, b.key)
	if got := served(t, addr); got != a.serial {
		t.Fatalf("files looked at again within the interval: serving serial %d, want %d", got, a.serial)
	}
	r.mu.Lock()
	r.checked = time.Now().Add(-time.Hour)
	r.mu.Unlock()
	if got := served(t, addr); got != b.serial {
		t.Fatalf("after the interval: serving serial %d, want %d", got, b.serial)
	}
}

func TestReloaderRefusesTLS11(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a := newPair(t, "first", 1)
	replace(t, certFile, a.cert)
	replace(t, keyFile, a.key)
	r, err := NewReloader(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.Config())
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}
	if c, err := d.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

func TestNewReloaderFailsOnBadFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a, b := newPair(t, "first", 1), newPair(t, "second", 2)
	if _, err := NewReloader(certFile, keyFile, nil); err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Errorf("missing files: err %v, want one naming cert.pem", err)
	}
	replace(t, certFile, a.cert)
	replace(t, keyFile, b.key)
	_, err := NewReloader(certFile, keyFile, nil)
	if err == nil || !strings.Contains(err.Error(), "cert.pem") || !strings.Contains(err.Error(), "key.pem") {
		t.Errorf("mismatched pair: err %v, want one naming both files", err)
	}
}
