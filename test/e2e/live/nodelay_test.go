//go:build unix

package live

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// serverNoDelay finds, among this process's descriptors, the node's socket
// whose peer is client, and returns its TCP_NODELAY.
func serverNoDelay(t *testing.T, client net.Addr) bool {
	t.Helper()
	want := client.(*net.TCPAddr)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getpeername(fd)
		if err != nil {
			continue
		}
		peer, ok := sa.(*syscall.SockaddrInet4)
		if !ok || peer.Port != want.Port || !net.IP(peer.Addr[:]).Equal(want.IP) {
			continue
		}
		v, err := syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
		if err != nil {
			t.Fatal(err)
		}
		return v != 0
	}
	t.Fatalf("no socket of the node has the peer %v", client)
	return false
}

// --tcp-nodelay: viewers' sockets send each write at once except in
// low-latency mode, where Nagle's algorithm joins them, unless it is "on".
func TestTCPNoDelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes with publishers: skipped with -short")
	}
	for _, tc := range []struct {
		lowLatency bool
		nodelay    string
		want       bool
	}{
		{false, "auto", true},
		{true, "auto", false},
		{true, "on", true},
		{false, "off", false},
	} {
		t.Run(fmt.Sprintf("low-latency=%v,tcp-nodelay=%s", tc.lowLatency, tc.nodelay), func(t *testing.T) {
			n := e2eutil.StartNode(t, func(c *config.Config) { c.LowLatency, c.TCPNoDelay = tc.lowLatency, tc.nodelay })
			e2eutil.PublishLoop(t, e2eutil.Input(t), n.RTMPURL("live/nd"))
			e2eutil.WaitLiveHTTP(t, n.HTTPURL, "live/nd")
			v := e2eutil.PlayRTMP(t, fmt.Sprintf("127.0.0.1:%d", n.RTMPPort), "live/nd")
			testutil.WaitFor(t, 10*time.Second, "the RTMP viewer's frames", func() bool { return v.Video.Load() > 5 })
			if got := serverNoDelay(t, v.Conn.LocalAddr()); got != tc.want {
				t.Errorf("RTMP viewer's socket: TCP_NODELAY %v, want %v", got, tc.want)
			}
			conn, err := net.DialTimeout("tcp", n.HTTPAddr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			fmt.Fprintf(conn, "GET /live/nd.flv HTTP/1.1\r\nHost: %s\r\n\r\n", n.HTTPAddr())
			// Past the first picture, which leaves with the response head:
			// the sender has the socket by then.
			if _, err := io.CopyN(io.Discard, conn, 256<<10); err != nil {
				t.Fatal(err)
			}
			if got := serverNoDelay(t, conn.LocalAddr()); got != tc.want {
				t.Errorf("HTTP-FLV viewer's socket: TCP_NODELAY %v, want %v", got, tc.want)
			}
		})
	}
}
