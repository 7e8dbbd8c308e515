package webrtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/connlimit"
)

// SkippedInterfaces are the interfaces whose addresses are never offered
// to clients unless Config.Interfaces names them: container and virtual
// machine bridges and the virtual Ethernet pairs behind them, which no
// client outside the host reaches.
var SkippedInterfaces = []string{"docker*", "br-*", "veth*", "virbr*", "cni*", "flannel*", "cali*", "lxcbr*"}

// udpBuffer is the size asked for the shared UDP socket's receive and
// send buffers.
const udpBuffer = 4 << 20

// ICE-TCP limits.
const (
	// tcpFirstSTUN closes an ICE-TCP connection whose first STUN binding
	// request has not come within it.
	tcpFirstSTUN = 10 * time.Second
	// tcpWriteBuffer bounds what is queued for one ICE-TCP connection
	// whose peer reads slowly; past it, packets are dropped.
	tcpWriteBuffer = 1 << 20
	// tcpPacketQueue is how many packets one ICE-TCP connection holds
	// for its session before it reads them.
	tcpPacketQueue = 8
)

// CheckNATIP checks an entry of Config.NATIPs: an IP address, advertised
// instead of every local address of its family, or EXTERNAL/LOCAL,
// advertised instead of LOCAL only.
func CheckNATIP(s string) error {
	ext, local, pair := strings.Cut(s, "/")
	if err := checkUnicast(ext); err != nil {
		return err
	}
	if pair {
		return checkUnicast(local)
	}
	return nil
}

// checkUnicast checks an address a candidate can carry.
func checkUnicast(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%q is not an IP address (IP, or EXTERNAL/LOCAL)", s)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return fmt.Errorf("%q is not a unicast address clients can reach", s)
	}
	return nil
}

// natRules turns Config.NATIPs into pion's address rewrite rules: bare
// addresses replace every host candidate of their family; EXTERNAL/LOCAL
// pairs replace LOCAL's alone, and win over the bare ones.
func natRules(ips []string) ([]webrtc.ICEAddressRewriteRule, error) {
	var rules []webrtc.ICEAddressRewriteRule
	var catchAll []string
	byLocal := map[string]int{} // index in rules
	for _, s := range ips {
		if err := CheckNATIP(s); err != nil {
			return nil, err
		}
		ext, local, pair := strings.Cut(s, "/")
		if !pair {
			catchAll = append(catchAll, ext)
			continue
		}
		if i, ok := byLocal[local]; ok {
			rules[i].External = append(rules[i].External, ext)
			continue
		}
		byLocal[local] = len(rules)
		rules = append(rules, webrtc.ICEAddressRewriteRule{External: []string{ext}, Local: local,
			AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace})
	}
	if len(catchAll) > 0 {
		rules = append(rules, webrtc.ICEAddressRewriteRule{External: catchAll,
			AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace})
	}
	return rules, nil
}

// CheckInterface checks an entry of Config.Interfaces: an interface name,
// or a pattern of path.Match ("eth*").
func CheckInterface(pattern string) error {
	if pattern == "" {
		return errors.New("empty interface name")
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return fmt.Errorf("%q is not an interface name or pattern: %w", pattern, err)
	}
	return nil
}

// interfaceFilter returns which interfaces' addresses are offered: those
// matching patterns, or with none, every interface but SkippedInterfaces.
func interfaceFilter(patterns []string) (func(name string) bool, error) {
	for _, p := range patterns {
		if err := CheckInterface(p); err != nil {
			return nil, err
		}
	}
	keep, list := false, patterns
	if len(patterns) == 0 {
		keep, list = true, SkippedInterfaces
	}
	return func(name string) bool {
		for _, p := range list {
			if ok, _ := path.Match(p, name); ok {
				return !keep
			}
		}
		return keep
	}, nil
}

// keepIP reports whether a local address may be offered: never a
// link-local one, which reaches no further than its own link and, for
// IPv6, would reveal the interface's hardware address.
func keepIP(ip net.IP) bool {
	return !ip.IsLinkLocalUnicast() && !ip.IsMulticast() && !ip.IsUnspecified()
}

// iface is a network interface and its addresses, as listenAddrs reads
// them.
type iface struct {
	name  string
	up    bool
	addrs []netip.Addr
}

// listenAddrs returns the addresses a UDP socket bound to every address
// at port is offered at: those of the interfaces keepIface keeps, of the
// families asked for, but for link-local ones.
func listenAddrs(ifaces []iface, keepIface func(string) bool, v4, v6 bool, port int) []net.Addr {
	var out []net.Addr
	for _, in := range ifaces {
		if !in.up || !keepIface(in.name) {
			continue
		}
		for _, a := range in.addrs {
			a = a.Unmap()
			if a.Is4() && !v4 || a.Is6() && !v6 || !keepIP(a.AsSlice()) {
				continue
			}
			out = append(out, &net.UDPAddr{IP: a.AsSlice(), Port: port})
		}
	}
	return out
}

// localInterfaces lists the host's interfaces and their addresses.
func localInterfaces() ([]iface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]iface, 0, len(ifs))
	for _, in := range ifs {
		addrs, err := in.Addrs()
		if err != nil {
			continue
		}
		f := iface{name: in.Name, up: in.Flags&net.FlagUp != 0}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				f.addrs = append(f.addrs, p.Addr())
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// listenNetwork is the network ("udp", "udp4", "udp6" and the like) that
// binds addr's families: both for an address without a host, as Go
// binds "0.0.0.0" to both as well.
func listenNetwork(proto, addr string) (network string, v4, v6 bool, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, false, err
	}
	if host == "" {
		return proto, true, true, nil
	}
	a, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return proto, true, true, nil // a name: let the system resolve it
	case a.Is4():
		return proto + "4", true, false, nil
	}
	return proto + "6", false, true, nil
}

// wildcardMux is the UDP mux of a socket bound to every address: it is
// offered at the addresses of the interfaces kept (pion's own mux would
// offer every interface's, container bridges included), read afresh for
// each session so that addresses added later are offered too.
type wildcardMux struct {
	ice.UDPMux
	port      int
	v4, v6    bool
	keepIface func(string) bool
	log       *slog.Logger
	logs      connlimit.LogLimiter
}

// GetListenAddresses implements ice.UDPMux.
func (m *wildcardMux) GetListenAddresses() []net.Addr {
	ifs, err := localInterfaces()
	if err != nil {
		m.logs.Log(m.log, slog.LevelWarn, "interfaces", "webrtc: cannot list the network interfaces", "err", err)
		return nil
	}
	return listenAddrs(ifs, m.keepIface, m.v4, m.v6, m.port)
}

// listenUDP opens the UDP socket every session shares and its mux.
func listenUDP(addr string, keepIface func(string) bool, log *slog.Logger) (ice.UDPMux, net.Addr, error) {
	network, v4, v6, err := listenNetwork("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, nil, err
	}
	conn, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, nil, err
	}
	// Every session's STUN, DTLS and RTCP arrive here, in bursts when
	// viewers join at once. The system grants at most net.core.rmem_max
	// and wmem_max.
	conn.SetReadBuffer(udpBuffer)
	conn.SetWriteBuffer(udpBuffer)
	local := conn.LocalAddr().(*net.UDPAddr)
	mux := webrtc.NewICEUDPMux(nil, conn)
	if local.IP.IsUnspecified() {
		return &wildcardMux{UDPMux: mux, port: local.Port, v4: v4, v6: v6, keepIface: keepIface, log: log}, local, nil
	}
	return mux, local, nil
}

// tcpListener bounds the ICE-TCP connections open at once; beyond max a
// new one is closed as soon as it is accepted.
type tcpListener struct {
	net.Listener
	max  int64
	open atomic.Int64
	log  *slog.Logger
	logs connlimit.LogLimiter
}

// Accept implements net.Listener.
func (l *tcpListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.logs.Log(l.log, slog.LevelWarn, "ice-tcp", "webrtc: ICE-TCP connection refused: too many open", "remote", c.RemoteAddr(), "max", l.max)
			c.Close()
			continue
		}
		return &tcpConn{Conn: c, l: l}, nil
	}
}

// tcpConn is an ICE-TCP connection, counted until it closes.
type tcpConn struct {
	net.Conn
	l    *tcpListener
	once sync.Once
}

// Close implements net.Conn.
func (c *tcpConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// listenTCP opens the ICE-TCP listener and its mux, which takes at most
// max connections at once, and returns the network types it serves.
func listenTCP(addr string, max int, log *slog.Logger) (ice.TCPMux, net.Addr, []webrtc.NetworkType, error) {
	network, v4, v6, err := listenNetwork("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, nil, nil, err
	}
	var types []webrtc.NetworkType
	if v4 {
		types = append(types, webrtc.NetworkTypeTCP4)
	}
	if v6 {
		types = append(types, webrtc.NetworkTypeTCP6)
	}
	mux := ice.NewTCPMuxDefault(ice.TCPMuxParams{
		Listener:             &tcpListener{Listener: ln, max: int64(max), log: log},
		ReadBufferSize:       tcpPacketQueue,
		WriteBufferSize:      tcpWriteBuffer,
		FirstStunBindTimeout: tcpFirstSTUN,
	})
	return mux, ln.Addr(), types, nil
}

// settingEngine is the pion configuration of every session: the shared
// sockets, the interfaces and addresses offered, and NAT addresses.
func (s *Server) settingEngine() (webrtc.SettingEngine, error) {
	var se webrtc.SettingEngine
	networks := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	// Loopback addresses are offered too: a client on the same host
	// reaches them, and one elsewhere tries them and moves on.
	se.SetIncludeLoopbackCandidate(true)
	// No mDNS: clients that hide their addresses behind .local names
	// (browsers do) are found by their connectivity checks, which reach
	// the server's own candidates (RFC 8445 §7.3.1.3, peer-reflexive),
	// and a session spares a multicast socket and its reader.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetInterfaceFilter(s.keepIface)
	se.SetIPFilter(keepIP)
	if s.udpMux != nil {
		se.SetICEUDPMux(s.udpMux)
	}
	if s.tcpMux != nil {
		se.SetICETCPMux(s.tcpMux)
		networks = append(networks, s.tcpNetworks...)
		// The server only waits for clients' ICE-TCP connections: an
		// offer's passive TCP candidates would otherwise have it dial
		// any address and port the offer names.
		se.DisableActiveTCP(true)
	}
	se.SetNetworkTypes(networks)
	if len(s.natRules) > 0 {
		if err := se.SetICEAddressRewriteRules(s.natRules...); err != nil {
			return se, err
		}
	}
	return se, nil
}
