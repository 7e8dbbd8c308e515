//go:build linux

// Command wan emulates a long network path on one machine, for measuring
// what a path's round trip does to meshcast's latency: it makes two network
// namespaces, each with a TUN device, and forwards every packet between
// them after a fixed one-way delay. Both ends run the kernel's own TCP, so
// acknowledgements, Nagle's algorithm and congestion control behave as
// over a real link. It needs root (CAP_NET_ADMIN) and /dev/net/tun, and no
// netem. It prints "ready" once both ends are up and removes the
// namespaces when it is stopped.
//
//	go run ./bench/wan -delay 25ms
//	ip netns exec mcwan-srv meshcast serve --rtmp-addr 10.199.0.1:1935 ...
//	ip netns exec mcwan-load meshcast bench --publish rtmp://10.199.0.1:1935/live/x ...
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
	"unsafe"
)

// The two ends.
var ends = [2]struct{ ns, dev, addr, peer string }{
	{"mcwan-srv", "mcwan0", "10.199.0.1", "10.199.0.2"},
	{"mcwan-load", "mcwan1", "10.199.0.2", "10.199.0.1"},
}

// queueLen bounds the packets in flight each way, as a link's buffer does:
// more are dropped.
const queueLen = 1 << 16

func main() {
	delay := flag.Duration("delay", 25*time.Millisecond, "one-way delay of every packet")
	mtu := flag.Int("mtu", 1500, "MTU of both ends")
	flag.Parse()
	if err := run(*delay, *mtu); err != nil {
		log.Fatal("wan: ", err)
	}
}

func run(delay time.Duration, mtu int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var devs [2]*os.File
	for i, e := range ends {
		exec.Command("ip", "netns", "del", e.ns).Run() // left by a run that was killed
		f, err := openTUN(e.dev)
		if err != nil {
			return err
		}
		defer f.Close()
		devs[i] = f
		for _, args := range [][]string{
			{"netns", "add", e.ns},
			{"link", "set", e.dev, "netns", e.ns},
			{"-n", e.ns, "link", "set", "lo", "up"},
			{"-n", e.ns, "link", "set", e.dev, "mtu", fmt.Sprint(mtu), "up"},
			{"-n", e.ns, "addr", "add", e.addr, "peer", e.peer, "dev", e.dev},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		defer exec.Command("ip", "netns", "del", e.ns).Run()
	}
	fmt.Printf("ready: %s %s <-> %s %s, %v each way\n", ends[0].ns, ends[0].addr, ends[1].ns, ends[1].addr, delay)
	go forward(devs[0], devs[1], delay)
	go forward(devs[1], devs[0], delay)
	<-ctx.Done()
	return nil
}

// openTUN creates TUN device name (IFF_TUN | IFF_NO_PI) in this namespace.
func openTUN(name string) (*os.File, error) {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	var req [40]byte // struct ifreq
	copy(req[:syscall.IFNAMSIZ-1], name)
	*(*uint16)(unsafe.Pointer(&req[syscall.IFNAMSIZ])) = syscall.IFF_TUN | syscall.IFF_NO_PI
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		f.Close()
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, e)
	}
	return f, nil
}

type packet struct {
	due time.Time
	b   []byte
}

// forward copies packets from one device to the other, each delay after it
// was read, in order.
func forward(from, to *os.File, delay time.Duration) {
	q := make(chan packet, queueLen)
	go func() {
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				time.Sleep(d)
			}
			to.Write(p.b)
		}
	}()
	buf := make([]byte, 65536)
	for {
		n, err := from.Read(buf)
		if err != nil {
			close(q)
			return
		}
		select {
		case q <- packet{time.Now().Add(delay), append([]byte(nil), buf[:n]...)}:
		default: // the link's buffer is full: the packet is lost
		}
	}
}
