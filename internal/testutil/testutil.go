// Package testutil helps meshcast's tests run real components: free
// loopback ports, the tools a test needs, and throwaway Redis servers.
package testutil

import (
	"bufio"
	"bytes"
	"fmt"
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

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
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

// Redis is a redis-server child process without persistence on a loopback
// port: a restart on the same port starts it empty, as after a crash.
type Redis struct {
	Port   int
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd exits
	out    *LockedBuffer
	once   sync.Once
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is the server's redis:// URL, database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// StartRedis starts redis-server on port, or on a free port if port is 0,
// with extra arguments args, and stops it when the test ends. Without
// redis-server the test is skipped, or fails in CI.
func StartRedis(t testing.TB, port int, args ...string) *Redis {
	t.Helper()
	Need(t, "redis-server")
	for attempt := 0; ; attempt++ {
		p := port
		if p == 0 {
			p = FreePort(t)
		}
		r, err := runRedis(t, p, args)
		if err == nil {
			t.Cleanup(func() { r.Stop(t) })
			return r
		}
		// A free port can be taken between FreePort and redis-server's
		// bind; a port of our own should be free again at once.
		if attempt == 4 {
			t.Fatalf("redis-server: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func runRedis(t testing.TB, port int, args []string) (*Redis, error) {
	r := &Redis{Port: port, exited: make(chan struct{}), out: &LockedBuffer{}}
	r.cmd = exec.Command("redis-server", append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", t.TempDir()}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		r.cmd.Wait()
		close(r.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !ping(port) {
		select {
		case <-r.exited:
			return nil, fmt.Errorf("exited on port %d: %s", port, r.out.String())
		default:
		}
		if time.Now().After(deadline) {
			r.Stop(t)
			return nil, fmt.Errorf("no answer on port %d: %s", port, r.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r, nil
}

// Stop ends the server and waits for it to be gone, so its port is free;
// stopping a stopped server does nothing.
func (r *Redis) Stop(t testing.TB) {
	r.once.Do(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			r.cmd.Process.Kill()
			<-r.exited
			t.Logf("redis-server on port %d ignored SIGTERM: %s", r.Port, r.out.String())
		}
	})
}

// ping tells whether a Redis server answers on port.
func ping(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}
