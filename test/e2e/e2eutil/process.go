//go:build unix

package e2eutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
)

// Proc is a meshcast server running as its own process.
type Proc struct {
	Cmd      *exec.Cmd              // the running meshcast serve
	RTMPAddr string                 // 127.0.0.1:PORT
	RTMPPort int                    // of RTMPAddr
	HTTPPort int                    // of HTTPURL
	HTTPURL  string                 // http://127.0.0.1:PORT
	Stdout   *testutil.LockedBuffer // the start-up message with the URLs
	Stderr   *testutil.LockedBuffer // the server's log
	Waited   chan error             // receives the process's exit
	killed   atomic.Bool
}

// Exit waits for the process to end by itself and returns how it exited.
func (p *Proc) Exit(t *testing.T, timeout time.Duration) error {
	t.Helper()
	p.killed.Store(true) // ended by the test: cleanup has nothing to stop
	select {
	case err := <-p.Waited:
		return err
	case <-time.After(timeout):
		p.Cmd.Process.Kill()
		<-p.Waited
		t.Fatalf("meshcast still running %v later", timeout)
		return nil
	}
}

// Kill ends the process with SIGKILL, as a crash would.
func (p *Proc) Kill(t *testing.T) {
	t.Helper()
	p.killed.Store(true)
	p.Cmd.Process.Kill()
	select {
	case <-p.Waited:
	case <-time.After(10 * time.Second):
		t.Fatal("meshcast did not die of SIGKILL")
	}
}

// errPortTaken is a server's exit because one of its ports was taken
// between testutil.FreePort and its listening: by another test process
// that go test runs alongside, say.
var errPortTaken = errors.New("a port was taken")

// StartProcess runs "meshcast serve" on free loopback ports with extra
// flags and waits until it accepts connections. When a port it chose is
// taken before the server listens, it starts the server again on others.
func StartProcess(t *testing.T, flags ...string) *Proc {
	t.Helper()
	bin := MeshcastBinary(t)
	for attempt := 1; ; attempt++ {
		p, err := startBinary(t, bin, nil, testutil.FreePort(t), testutil.FreePort(t), flags...)
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v: starting again on other ports", err)
	}
}

// StartProcessAt is StartProcess on given loopback ports.
func StartProcessAt(t *testing.T, rtmpPort, httpPort int, flags ...string) *Proc {
	t.Helper()
	return StartBinary(t, MeshcastBinary(t), nil, rtmpPort, httpPort, flags...)
}

// StartBinary is StartProcessAt for the meshcast binary bin, with env added
// to the process's environment.
func StartBinary(t *testing.T, bin string, env []string, rtmpPort, httpPort int, flags ...string) *Proc {
	t.Helper()
	p, err := startBinary(t, bin, env, rtmpPort, httpPort, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startBinary starts bin and waits until it has said it is running and it
// accepts connections. It returns an error when the process exits first
// (wrapping errPortTaken when a port was in use), and fails the test when
// it is not up within 10 s.
func startBinary(t *testing.T, bin string, env []string, rtmpPort, httpPort int, flags ...string) (*Proc, error) {
	t.Helper()
	return startCommand(t, []string{bin}, env, rtmpPort, httpPort, flags...)
}

// startCommand is startBinary for a command whose arguments, argv, end
// in the meshcast binary (a wrapper that execs it, say).
func startCommand(t *testing.T, argv []string, env []string, rtmpPort, httpPort int, flags ...string) (*Proc, error) {
	t.Helper()
	p := &Proc{
		RTMPAddr: fmt.Sprintf("127.0.0.1:%d", rtmpPort),
		RTMPPort: rtmpPort,
		HTTPPort: httpPort,
		HTTPURL:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		Stdout:   &testutil.LockedBuffer{},
		Stderr:   &testutil.LockedBuffer{},
		Waited:   make(chan error, 1),
	}
	args := append([]string{"serve", "--rtmp-addr", p.RTMPAddr, "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort), "--srt-addr", "127.0.0.1:0",
		"--webrtc-udp-addr", "127.0.0.1:0",
		"--rtsp-addr", "127.0.0.1:0", "--rtsps-addr", "127.0.0.1:0", "--rtsp-udp-rtp-addr=", "--rtsp-udp-rtcp-addr="}, flags...)
	p.Cmd = exec.Command(argv[0], append(argv[1:len(argv):len(argv)], args...)...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Stdout, p.Stderr
	p.Cmd.Env = append(append(os.Environ(), "MESHCAST_LOG_LEVEL=info"), env...)
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.Waited <- p.Cmd.Wait() }()
	t.Cleanup(func() {
		if p.killed.Load() {
			if t.Failed() {
				t.Logf("meshcast log (killed):\n%s", p.Stderr.String())
			}
			return
		}
		p.Cmd.Process.Signal(os.Interrupt)
		done := p.Waited
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("meshcast exited with %v after SIGINT\n%s", err, p.Stderr.String())
			}
		case <-time.After(10 * time.Second):
			p.Cmd.Process.Kill()
			<-done
			t.Errorf("meshcast did not exit within 10 s of SIGINT")
		}
		if t.Failed() {
			t.Logf("meshcast log:\n%s", p.Stderr.String())
		}
	})
	// The start-up message comes once every listener is open: the server
	// answering on the ports is this process, not another that took them.
	const timeout = 10 * time.Second
	deadline := time.Now().Add(timeout)
	for !p.up() {
		select {
		case err := <-p.Waited:
			p.Waited <- err
			p.killed.Store(true) // nothing left for cleanup to stop
			log := p.Stderr.String()
			if strings.Contains(log, "address already in use") {
				return nil, fmt.Errorf("meshcast on ports %d and %d exited (%v): %w\n%s", rtmpPort, httpPort, err, errPortTaken, log)
			}
			return nil, fmt.Errorf("meshcast exited before it accepted connections: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for meshcast to accept connections", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, nil
}

// up reports whether the server has printed its start-up message and
// accepts RTMP connections and answers /healthz.
func (p *Proc) up() bool {
	if !strings.Contains(p.Stdout.String(), " is running.") {
		return false
	}
	c, err := net.DialTimeout("tcp", p.RTMPAddr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	code, _ := HTTPGetQuiet(p.HTTPURL + "/healthz")
	return code == 200
}

// RSS returns the process's resident set size in bytes.
func (p *Proc) RSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// SRTPort returns the UDP port the server's SRT listener took (it is
// started with --srt-addr 127.0.0.1:0), from its start-up log.
func (p *Proc) SRTPort(t *testing.T) int {
	t.Helper()
	m := srtListening.FindStringSubmatch(p.Stderr.String())
	if m == nil {
		t.Fatalf("meshcast logged no SRT address:\n%s", p.Stderr.String())
	}
	port, _ := strconv.Atoi(m[1])
	return port
}

// srtListening finds the SRT server's start-up line in a text or JSON
// log (which writes addresses as strings too).
var srtListening = regexp.MustCompile(`"?msg"?[=:]"srt listening"[^\n]*"?addr"?[=:]"?[^ ",\n]+:(\d+)`)
