package webrtc

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

func TestInterfaceFilter(t *testing.T) {
	cases := []struct {
		name     string
		patterns []string
		keep     []string
		skip     []string
	}{
		{"default", nil,
			[]string{"lo", "eth0", "ens5", "enp3s0", "wlan0", "wg0", "tailscale0", "bond0"},
			[]string{"docker0", "docker_gwbridge", "br-1f2e3d4c5b6a", "veth12ab34c", "virbr0", "virbr0-nic", "cni0", "flannel.1", "cali1a2b3c", "lxcbr0"}},
		{"names and patterns", []string{"eth*", "lo", "wg[0-9]"},
			[]string{"eth0", "eth1", "lo", "wg0"},
			[]string{"ens5", "wlan0", "docker0", "wg10", "lo0"}},
		// Named, a bridge is offered: the list replaces the default one.
		{"a bridge named", []string{"docker0"}, []string{"docker0"}, []string{"eth0", "lo", "docker1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keep, err := interfaceFilter(c.patterns)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range c.keep {
				if !keep(n) {
					t.Errorf("%s is skipped, want it kept", n)
				}
			}
			for _, n := range c.skip {
				if keep(n) {
					t.Errorf("%s is kept, want it skipped", n)
				}
			}
		})
	}
	for _, bad := range []string{"", "eth[0", `eth\`} {
		if _, err := interfaceFilter([]string{"eth0", bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestKeepIP(t *testing.T) {
	for ip, want := range map[string]bool{
		"10.0.0.5": true, "192.0.2.1": true, "127.0.0.1": true, "::1": true, "2001:db8::1": true, "fd00::2": true,
		"169.254.10.1": false, "fe80::fc:ff:fe00:1": false, "0.0.0.0": false, "::": false, "224.0.0.251": false, "ff02::fb": false,
	} {
		if got := keepIP(net.ParseIP(ip)); got != want {
			t.Errorf("keepIP(%s) = %v, want %v", ip, got, want)
		}
	}
}

// TestListenAddrs: a socket bound to every address is offered at the
// addresses of the interfaces kept, of its families, never link-local
// ones, nor those of interfaces that are down.
func TestListenAddrs(t *testing.T) {
	a := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	ifaces := []iface{
		{name: "lo", up: true, addrs: a("127.0.0.1", "::1")},
		{name: "eth0", up: true, addrs: a("192.0.2.2", "fd00::2", "fe80::fc:ff:fe00:1", "169.254.3.4")},
		{name: "docker0", up: true, addrs: a("172.17.0.1")},
		{name: "br-5a6b7c", up: true, addrs: a("172.18.0.1")},
		{name: "veth9f8e7d", up: true, addrs: a("fe80::1")},
		{name: "eth1", up: false, addrs: a("198.51.100.2")},
		{name: "eth2", up: true, addrs: a("::ffff:203.0.113.9")},
	}
	keep, err := interfaceFilter(nil)
	if err != nil {
		t.Fatal(err)
	}
	str := func(addrs []net.Addr) []string {
		var out []string
		for _, x := range addrs {
			out = append(out, x.String())
		}
		return out
	}
	for _, c := range []struct {
		name   string
		keep   func(string) bool
		v4, v6 bool
		want   []string
	}{
		{"both families", keep, true, true, []string{"127.0.0.1:8189", "[::1]:8189", "192.0.2.2:8189", "[fd00::2]:8189", "203.0.113.9:8189"}},
		{"IPv4", keep, true, false, []string{"127.0.0.1:8189", "192.0.2.2:8189", "203.0.113.9:8189"}},
		{"IPv6", keep, false, true, []string{"[::1]:8189", "[fd00::2]:8189"}},
		{"eth0 alone", func(n string) bool { return n == "eth0" }, true, true, []string{"192.0.2.2:8189", "[fd00::2]:8189"}},
	} {
		if got := str(listenAddrs(ifaces, c.keep, c.v4, c.v6, 8189)); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestListenNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		":8189": "udp", "0.0.0.0:8189": "udp4", "10.0.0.5:8189": "udp4", "[::]:8189": "udp6", "[fd00::2]:8189": "udp6", "localhost:8189": "udp",
	} {
		if got, _, _, err := listenNetwork("udp", addr); err != nil || got != want {
			t.Errorf("listenNetwork(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
}

func TestNATRules(t *testing.T) {
	rules, err := natRules([]string{"203.0.113.7", "198.51.100.9/10.0.0.9", "2001:db8::7", "198.51.100.10/10.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	want := []webrtc.ICEAddressRewriteRule{
		{External: []string{"198.51.100.9", "198.51.100.10"}, Local: "10.0.0.9", AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace},
		{External: []string{"203.0.113.7", "2001:db8::7"}, AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace},
	}
	if len(rules) != len(want) {
		t.Fatalf("rules %+v, want %+v", rules, want)
	}
	for i := range want {
		if !slices.Equal(rules[i].External, want[i].External) || rules[i].Local != want[i].Local ||
			rules[i].AsCandidateType != want[i].AsCandidateType || rules[i].Mode != want[i].Mode {
			t.Errorf("rule %d: %+v, want %+v", i, rules[i], want[i])
		}
	}
	if rules, err := natRules(nil); err != nil || rules != nil {
		t.Errorf("no addresses: %v %v", rules, err)
	}
	for _, bad := range []string{"nat.example.net", "203.0.113.7/", "/10.0.0.1", "0.0.0.0", "fe80::1", "203.0.113.7/10.0.0.1/8", "fe80::1%eth0"} {
		if _, err := natRules([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestStartClose: Start opens the UDP socket and the ICE-TCP listener on
// the addresses asked for, and Close frees them.
func TestStartClose(t *testing.T) {
	s, err := New(Config{UDPAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	udp, tcp := s.UDPAddr().String(), s.TCPAddr().String()
	if _, err := net.ListenPacket("udp", udp); err == nil {
		t.Errorf("UDP %s free while the server holds it", udp)
	}
	s.Close()
	for _, c := range []struct{ network, addr string }{{"udp", udp}, {"tcp", tcp}} {
		var err error
		if c.network == "udp" {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", c.addr); err == nil {
				pc.Close()
			}
		} else {
			var ln net.Listener
			if ln, err = net.Listen("tcp", c.addr); err == nil {
				ln.Close()
			}
		}
		if err != nil {
			t.Errorf("%s %s still held after Close: %v", c.network, c.addr, err)
		}
	}

	// Per-session ports: no shared socket.
	s, err = New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.UDPAddr() != nil || s.TCPAddr() != nil {
		t.Errorf("sockets %v %v without addresses", s.UDPAddr(), s.TCPAddr())
	}
	s.Close()

	// A taken port fails Start, and Close still frees what it opened.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err = New(Config{UDPAddr: "127.0.0.1:0", TCPAddr: ln.Addr().String()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Error("Start on a taken ICE-TCP port succeeded")
	}
	s.Close()
}

// TestTCPListenerBound: past its bound the ICE-TCP listener closes new
// connections at once; one closing makes room.
func TestTCPListenerBound(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &tcpListener{Listener: inner, max: 2, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	a, b := <-accepted, <-accepted
	refused := dial()
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := refused.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a third connection: read %v, want EOF (closed)", err)
	}
	if n := ln.open.Load(); n != 2 {
		t.Errorf("%d connections counted, want 2", n)
	}
	a.Close()
	a.Close() // counted once
	dial()
	c := <-accepted
	if n := ln.open.Load(); n != 2 {
		t.Errorf("%d connections counted after one closed and one came, want 2", n)
	}
	b.Close()
	c.Close()
	ln.Close()
	for range accepted {
	}
}
