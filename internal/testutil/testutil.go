// Package testutil helps meshcast's tests run real components: free
// loopback ports, the tools a test needs, and throwaway Redis servers.
package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need skips a test whose tool is missing outside CI and fails it in CI,
// where the test command (scripts/install-test-deps.sh) must have
// installed it.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed: the test command must install it (scripts/install-test-deps.sh)", tool)
			}
			t.Skipf("%s not installed: run scripts/install-test-deps.sh", tool)
		}
	}
}

// WaitFor polls cond every 20 ms until it holds, failing the test after
// timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// givenPorts are the ports FreePort has returned in this process.
var givenPorts struct {
	sync.Mutex
	m map[int]bool
}

// FreePort returns a loopback TCP port that was free a moment ago, and
// never the same port twice in one test process: tests running in
// parallel do not get each other's ports.
func FreePort(t testing.TB) int {
	t.Helper()
	givenPorts.Lock()
	defer givenPorts.Unlock()
	if givenPorts.m == nil {
		givenPorts.m = make(map[int]bool)
	}
	// Ports given before stay open here until a new one comes up, so the
	// system cannot offer them again meanwhile.
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		if port := ln.Addr().(*net.TCPAddr).Port; !givenPorts.m[port] {
			givenPorts.m[port] = true
			return port
		}
	}
	t.Fatal("no loopback port free that was not given before")
	return 0
}

// LockedBuffer is a bytes.Buffer safe for a process's output and a test
// reading it at once.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Server is a server child process on a loopback port, stopped when the
// test that started it ends.
type Server struct {
	Port   int
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd exits
	out    *LockedBuffer
	once   sync.Once
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// Stop ends the server with SIGTERM (SIGKILL after 5 s) and waits for it to
// be gone, so its port is free; stopping a stopped server does nothing.
func (s *Server) Stop(t testing.TB) {
	s.once.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
			t.Logf("%s on port %d ignored SIGTERM: %s", s.name, s.Port, s.out.String())
		}
	})
}

// Kill ends the server at once, as a crash would, and waits for it to be
// gone.
func (s *Server) Kill() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
}

// startServer starts the server command name with args on port, which it
// was told to listen on, and stops it when the test ends. It retries on
// another free port (when port was 0) if the server does not come up, for
// a free port can be taken between FreePort and the server's bind; up
// reports whether the server answers. Without the command the test is
// skipped, or fails in CI.
func startServer(t testing.TB, port int, up func(port int) bool, name string, args func(port int) []string) *Server {
	t.Helper()
	Need(t, name)
	for attempt := 0; ; attempt++ {
		p := port
		if p == 0 {
			p = FreePort(t)
		}
		s, err := runServer(t, p, up, name, args(p))
		if err == nil {
			t.Cleanup(func() { s.Stop(t) })
			return s
		}
		if attempt == 4 {
			t.Fatalf("%s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func runServer(t testing.TB, port int, up func(port int) bool, name string, args []string) (*Server, error) {
	s := &Server{Port: port, name: name, exited: make(chan struct{}), out: &LockedBuffer{}}
	s.cmd = exec.Command(name, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !up(port) {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("exited on port %d: %s", port, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop(t)
			return nil, fmt.Errorf("no answer on port %d: %s", port, s.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s, nil
}

// answers tells whether a server on port answers request with a line
// starting with prefix.
func answers(port int, request, prefix string) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, prefix)
}

// Redis is a redis-server child process without persistence on a loopback
// port: a restart on the same port starts it empty, as after a crash.
type Redis struct{ *Server }

// URL is the server's redis:// URL, database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// StartRedis starts redis-server on port, or on a free port if port is 0,
// with extra arguments args, and stops it when the test ends. Without
// redis-server the test is skipped, or fails in CI.
func StartRedis(t testing.TB, port int, args ...string) *Redis {
	t.Helper()
	dir := t.TempDir()
	return &Redis{startServer(t, port, func(p int) bool { return answers(p, "PING\r\n", "+PONG") }, "redis-server",
		func(p int) []string {
			return append([]string{"--port", strconv.Itoa(p), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "no", "--dir", dir}, args...)
		})}
}

// StartMemcached starts memcached (64 MiB, TCP only) on port, or on a free
// port if port is 0, and stops it when the test ends. Without memcached the
// test is skipped, or fails in CI.
func StartMemcached(t testing.TB, port int) *Server {
	t.Helper()
	return startServer(t, port, func(p int) bool { return answers(p, "version\r\n", "VERSION") }, "memcached",
		func(p int) []string {
			args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(p), "-U", "0", "-m", "64", "-t", "2"}
			if os.Geteuid() == 0 {
				args = append(args, "-u", "root") // memcached refuses root without it
			}
			return args
		})
}
