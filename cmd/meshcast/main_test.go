package main

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// With one CPU the runtime gets a second processor, unless GOMAXPROCS is
// set.
func TestSecondProc(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	log := slog.New(slog.DiscardHandler)
	secondProc([]string{"GOMAXPROCS=1", "HOME=/"}, log)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("with GOMAXPROCS set: %d processors, want 1", n)
	}
	secondProc([]string{"HOME=/"}, log)
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("one CPU: %d processors, want 2", n)
	}
	runtime.GOMAXPROCS(4)
	secondProc(nil, log)
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Errorf("four CPUs: %d processors, want 4", n)
	}
}

// serve --check reads the file, the environment, the flags and the secret
// files, validates them and exits, binding nothing: a port already in use is
// no error.
func TestServeCheck(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := write("cluster-secret", "0123456789abcdef0123\n")
	keys := write("publish-keys", "# publishers\nlive=publish-k3y\n")
	conf := write("meshcast.yaml", "log_format: json\ndrain_grace: 40s\n")
	bad := write("bad.yaml", "no_such_setting: 1\n")

	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		out  string // on stdout
		err  string // on stderr
	}{
		{name: "defaults", args: []string{"--check"}, out: "configuration ok\n"},
		{name: "cluster", args: []string{"--config", conf, "--redis", "redis://127.0.0.1:1/0", "--cluster-secret-file", secret,
			"--publish-keys-file=" + keys, "--node-id=meshcast-0", "--rtmp-addr", busy.Addr().String(), "--mesh", "--check"},
			out: "configuration ok\n"},
		{name: "before other flags", args: []string{"-check", "--node-id", "n1"}, out: "configuration ok\n"},
		{name: "from the environment", args: []string{"--check=true"}, env: []string{"MESHCAST_CONFIG=" + conf}, out: "configuration ok\n"},
		{name: "a value named --check", args: []string{"--log-level", "--check"}, code: 2, err: "--log-level"},
		{name: "invalid", args: []string{"--check", "--redis", "redis://127.0.0.1:1/0", "--cluster-secret", "short"}, code: 2, err: "--cluster-secret"},
		{name: "unknown flag", args: []string{"--check", "--no-such-flag=1"}, code: 2, err: "no-such-flag"},
		{name: "unknown key in the file", args: []string{"--check", "--config", bad}, code: 2, err: "no_such_setting"},
		{name: "missing secret file", args: []string{"--check", "--cluster-secret-file", filepath.Join(dir, "none")}, code: 2, err: "none"},
		{name: "bad --check value", args: []string{"--check=maybe"}, code: 2, err: "--check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"serve"}, tc.args...), tc.env, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, tc.code, stdout.String(), stderr.String())
			}
			if tc.code == 0 && stdout.String() != tc.out {
				t.Errorf("stdout %q, want %q (stderr %q)", stdout.String(), tc.out, stderr.String())
			}
			if tc.code != 0 {
				if stdout.Len() != 0 {
					t.Errorf("stdout %q, want nothing", stdout.String())
				}
				if !strings.Contains(stderr.String(), tc.err) {
					t.Errorf("stderr %q does not name %q", stderr.String(), tc.err)
				}
			}
		})
	}
}

// takeCheck finds --check among serve's flags only where the flag package
// would read a flag.
func TestTakeCheck(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		rest  []string
		check bool
	}{
		{args: []string{}, rest: []string{}},
		{args: []string{"--check"}, rest: []string{}, check: true},
		{args: []string{"--mesh", "--check", "--node-id", "a"}, rest: []string{"--mesh", "--node-id", "a"}, check: true},
		{args: []string{"--node-id", "--check"}, rest: []string{"--node-id", "--check"}},
		{args: []string{"--check=false", "--log-level=debug"}, rest: []string{"--log-level=debug"}},
		{args: []string{"--", "--check"}, rest: []string{"--", "--check"}},
		{args: []string{"extra", "--check"}, rest: []string{"extra", "--check"}},
	} {
		rest, check, err := takeCheck(tc.args)
		if err != nil || check != tc.check || !slices.Equal(rest, tc.rest) {
			t.Errorf("takeCheck(%q) = %q, %v, %v; want %q, %v", tc.args, rest, check, err, tc.rest, tc.check)
		}
	}
}
