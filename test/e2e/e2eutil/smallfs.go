//go:build linux

package e2eutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/internal/testutil"
)

// SmallFS modes.
const (
	// SmallFSTmpfs is a tmpfs of the given size, mounted for the process
	// alone in a mount namespace of its own: writes past it fail with
	// ENOSPC, as on a full disk.
	SmallFSTmpfs = "tmpfs"
	// SmallFSRlimit is a file size limit (RLIMIT_FSIZE) on the process,
	// with SIGXFSZ ignored: a write that would take a file past it fails
	// with EFBIG. It is the fallback where mount namespaces are not to be
	// had; the limit is per file, not for the directory.
	SmallFSRlimit = "rlimit"
)

// SmallFSEnv forces a SmallFS mode ("tmpfs" or "rlimit"), to run the
// tests of the fallback on a machine that has both.
const SmallFSEnv = "MESHCAST_TEST_SMALLFS"

// SmallFS is a small file system that fills up for real, the kernel's
// doing, for one meshcast process: a tmpfs mounted in the process's own
// mount namespace (unshare -m as root, or in a user namespace of its own
// otherwise), or else a file size limit on the process. The test's own
// file system is never mounted on.
type SmallFS struct {
	// Dir is the file system's directory as the process sees it. The
	// test reads what the process wrote there through Path.
	Dir string
	// Size is its size in bytes: the tmpfs's, or the limit of one file.
	Size int64
	// Mode is SmallFSTmpfs or SmallFSRlimit.
	Mode string

	wrapper string // a script that runs meshcast on the file system
}

// NewSmallFS prepares a file system of size bytes (a multiple of 4 KiB)
// for StartProcess, in the mode the machine allows.
func NewSmallFS(t *testing.T, size int64) *SmallFS {
	t.Helper()
	base := t.TempDir()
	fs := &SmallFS{Dir: filepath.Join(base, "small"), Size: size}
	if err := os.Mkdir(fs.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var unshare []string
	switch mode := os.Getenv(SmallFSEnv); mode {
	case "", SmallFSTmpfs:
		unshare = mountNamespace(fs.Dir)
		if unshare == nil && mode == SmallFSTmpfs {
			t.Skipf("%s=%s, and this machine allows no mount namespace (unshare -m) with a tmpfs", SmallFSEnv, mode)
		}
	case SmallFSRlimit:
	default:
		t.Fatalf("%s=%q: want %s or %s", SmallFSEnv, mode, SmallFSTmpfs, SmallFSRlimit)
	}
	var script string
	if unshare != nil {
		fs.Mode = SmallFSTmpfs
		// unshare execs sh, which mounts and execs meshcast: the process
		// the test starts is meshcast itself, and its mount namespace (with
		// the tmpfs) ends with it.
		script = fmt.Sprintf("exec %s sh -c 'mount -t tmpfs -o size=%d meshcast-smallfs \"$0\" && exec \"$@\"' %s \"$@\"\n",
			strings.Join(unshare, " "), size, shellQuote(fs.Dir))
	} else {
		fs.Mode = SmallFSRlimit
		// ulimit -f counts 512-byte blocks; an ignored signal stays ignored
		// across exec.
		script = fmt.Sprintf("trap '' XFSZ\nulimit -f %d || exit 1\nexec \"$@\"\n", (size+511)/512)
	}
	fs.wrapper = filepath.Join(base, "smallfs.sh")
	if err := os.WriteFile(fs.wrapper, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("small file system: %s of %d bytes at %s", fs.Mode, size, fs.Dir)
	return fs
}

// mountNamespace returns the unshare command that gives a process a mount
// namespace in which it may mount a tmpfs on dir, or nil when there is
// none: plain unshare -m as root, or with a user namespace mapping the
// user to root otherwise.
func mountNamespace(dir string) []string {
	if _, err := exec.LookPath("unshare"); err != nil {
		return nil
	}
	for _, args := range [][]string{{"unshare", "--mount", "--propagation", "private", "--"}, {"unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--"}} {
		if args[1] == "--mount" && os.Geteuid() != 0 {
			continue
		}
		probe := append(append([]string{}, args...), "sh", "-c", "mount -t tmpfs -o size=64k meshcast-probe \"$0\"", dir)
		if exec.Command(probe[0], probe[1:]...).Run() == nil {
			return args
		}
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// StartProcess runs meshcast serve with flags on the file system, as
// e2eutil.StartProcess does.
func (fs *SmallFS) StartProcess(t *testing.T, flags ...string) *Proc {
	t.Helper()
	bin := MeshcastBinary(t)
	for attempt := 1; ; attempt++ {
		p, err := startCommand(t, []string{fs.wrapper, bin}, nil, testutil.FreePort(t), testutil.FreePort(t), flags...)
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v: starting again on other ports", err)
	}
}

// Path returns where the test reads path, a path under Dir that the
// running process p sees: through /proc/PID/root, the process's own view,
// for a tmpfs, which only its mount namespace has. It is valid while p
// runs.
func (fs *SmallFS) Path(p *Proc, path string) string {
	if fs.Mode != SmallFSTmpfs {
		return path
	}
	return filepath.Join("/proc", strconv.Itoa(p.Cmd.Process.Pid), "root", path)
}
