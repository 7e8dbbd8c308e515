//go:build unix

package e2eutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
)

// NginxRTMP is nginx-rtmp on a loopback port, as a push target.
type NginxRTMP struct {
	dir, bin string
	Port     int // its RTMP port
	cmd      *exec.Cmd
	done     chan struct{}
}

// StartNginxRTMP runs nginx with the RTMP module, live on, at port (0: a
// free one), until stop or the test's end.
func StartNginxRTMP(t *testing.T, port int) *NginxRTMP {
	t.Helper()
	const module = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
	bin := "/usr/sbin/nginx"
	if _, err := os.Stat(module); err != nil {
		testutil.Need(t, "libnginx-mod-rtmp")
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		bin = p
	}
	if port == 0 {
		port = testutil.FreePort(t)
	}
	n := &NginxRTMP{dir: t.TempDir(), bin: bin, Port: port}
	os.MkdirAll(filepath.Join(n.dir, "logs"), 0o755)
	conf := fmt.Sprintf(`load_module %s;
worker_processes 1;
daemon off;
master_process off;
pid %s/nginx.pid;
error_log %s/logs/error.log warn;
events { worker_connections 256; }
rtmp { server { listen 127.0.0.1:%d; chunk_size 4096; application live { live on; } } }
`, module, n.dir, n.dir, port)
	if err := os.WriteFile(filepath.Join(n.dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.Start(t)
	return n
}

// Start runs nginx again on its port, after Stop.
func (n *NginxRTMP) Start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(n.bin, "-p", n.dir, "-c", filepath.Join(n.dir, "nginx.conf"))
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	t.Cleanup(n.Stop)
	testutil.WaitFor(t, 10*time.Second, "nginx-rtmp to listen", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Stop kills nginx, as a crash would.
func (n *NginxRTMP) Stop() {
	select {
	case <-n.done:
		return
	default:
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
}
