//go:build unix

package e2eutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// mediaDir is this test process's own temporary directory: the media the
// tests make once (SharedFile) and the meshcast binary (MeshcastBinary).
// Each end-to-end package runs in a process of its own, so packages that
// go test runs side by side never write the same file.
var mediaDir string

// Main is the TestMain of every end-to-end package: it makes the process's
// media directory, runs the tests, removes the directory and, when they
// passed, fails the run if goroutines were left behind.
func Main(m *testing.M) {
	d, err := os.MkdirTemp("", "meshcast-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mediaDir = d
	code := m.Run()
	os.RemoveAll(d)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// dir returns the media directory, failing the test when the package's
// TestMain does not call Main.
func dir(t testing.TB) string {
	t.Helper()
	if mediaDir == "" {
		t.Fatal("e2eutil: the package's TestMain must call e2eutil.Main")
	}
	return mediaDir
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// BinaryVersion is the version MeshcastBinary stamps, as make build stamps
// git describe's.
const BinaryVersion = "v0.0.0-e2e"

// MeshcastBinary builds cmd/meshcast once per test process, without the
// race detector, so tests can measure the server as users run it. The
// binary goes to the process's media directory: packages running at once
// build their own, through the shared (and locked) go build cache.
func MeshcastBinary(t *testing.T) string {
	t.Helper()
	d := dir(t)
	binOnce.Do(func() {
		binPath = filepath.Join(d, "meshcast")
		out, err := exec.Command("go", "build", "-ldflags", "-X github.com/meshcast/meshcast/internal/buildinfo.Version="+BinaryVersion,
			"-o", binPath, "github.com/meshcast/meshcast/cmd/meshcast").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
