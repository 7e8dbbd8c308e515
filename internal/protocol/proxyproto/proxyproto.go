// Package proxyproto reads the PROXY protocol header (versions 1 and 2) that
// load balancers such as HAProxy and nginx's stream module put before a
// proxied TCP connection's own bytes, to tell the server the client's real
// address (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt).
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// ErrMalformed is returned for a header that breaks the specification.
var ErrMalformed = errors.New("proxyproto: malformed header")

// v1Prefix starts a version 1 (text) header; v2Sig a version 2 one.
var (
	v1Prefix = []byte("PROXY ")
	v2Sig    = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// maxV1 is the longest version 1 header, CRLF included (spec §2.1).
const maxV1 = 107

// maxV2Body bounds the addresses and TLVs after a version 2 header that we
// read (and drop beyond the addresses). The specification allows 65535;
// proxies send far less.
const maxV2Body = 4096

// Header is what a PROXY protocol header says about a connection.
type Header struct {
	// Source is the client's address, Dest the address it connected to.
	// Both are nil for a LOCAL (v2) or UNKNOWN (v1) connection, which the
	// proxy opened itself, e.g. for a health check.
	Source, Dest *net.TCPAddr
}

// Starts reports whether a connection whose first byte is b may start with
// a PROXY protocol header. RTMP (0x03), HTTP and TLS never start so.
func Starts(b byte) bool { return b == v1Prefix[0] || b == v2Sig[0] }

// Read reads one header from r, and not a byte more.
func Read(r io.Reader) (Header, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return Header{}, err
	}
	switch first[0] {
	case v1Prefix[0]:
		return readV1(r)
	case v2Sig[0]:
		return readV2(r)
	}
	return Header{}, fmt.Errorf("%w: first byte 0x%02x", ErrMalformed, first[0])
}

// readV1 reads the rest of "PROXY TCP4|TCP6|UNKNOWN ... \r\n" after its 'P'.
func readV1(r io.Reader) (Header, error) {
	line := make([]byte, 1, maxV1)
	line[0] = 'P'
	var b [1]byte
	for {
		if len(line) == maxV1 {
			return Header{}, fmt.Errorf("%w: v1 line longer than %d bytes", ErrMalformed, maxV1)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, unexpected(err)
		}
		line = append(line, b[0])
		if b[0] == '\n' {
			break
		}
	}
	if !bytes.HasPrefix(line, v1Prefix) || !bytes.HasSuffix(line, []byte("\r\n")) {
		return Header{}, fmt.Errorf("%w: v1 line not PROXY ... CRLF", ErrMalformed)
	}
	f := bytes.Split(line[len(v1Prefix):len(line)-2], []byte(" "))
	switch string(f[0]) {
	case "UNKNOWN":
		return Header{}, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, fmt.Errorf("%w: v1 protocol %q", ErrMalformed, truncate(f[0]))
	}
	if len(f) != 5 {
		return Header{}, fmt.Errorf("%w: v1 line has %d fields, want 6", ErrMalformed, len(f)+1)
	}
	v6 := string(f[0]) == "TCP6"
	src, err := v1Addr(f[1], f[3], v6)
	if err != nil {
		return Header{}, err
	}
	dst, err := v1Addr(f[2], f[4], v6)
	if err != nil {
		return Header{}, err
	}
	return Header{Source: src, Dest: dst}, nil
}

func v1Addr(ip, port []byte, v6 bool) (*net.TCPAddr, error) {
	a := net.ParseIP(string(ip))
	if a == nil || (a.To4() == nil) != v6 {
		return nil, fmt.Errorf("%w: v1 address %q", ErrMalformed, truncate(ip))
	}
	// Ports are decimal without leading zeros (spec §2.1).
	p, err := strconv.ParseUint(string(port), 10, 16)
	if err != nil || (len(port) > 1 && port[0] == '0') {
		return nil, fmt.Errorf("%w: v1 port %q", ErrMalformed, truncate(port))
	}
	return &net.TCPAddr{IP: a, Port: int(p)}, nil
}

// readV2 reads the rest of a binary header after its first byte.
func readV2(r io.Reader) (Header, error) {
	var h [16]byte
	h[0] = v2Sig[0]
	if _, err := io.ReadFull(r, h[1:]); err != nil {
		return Header{}, unexpected(err)
	}
	if !bytes.Equal(h[:12], v2Sig) {
		return Header{}, fmt.Errorf("%w: v2 signature", ErrMalformed)
	}
	if h[12]>>4 != 2 {
		return Header{}, fmt.Errorf("%w: v2 version %d", ErrMalformed, h[12]>>4)
	}
	cmd, family, proto := h[12]&0x0f, h[13]>>4, h[13]&0x0f
	n := int(binary.BigEndian.Uint16(h[14:]))
	if n > maxV2Body {
		return Header{}, fmt.Errorf("%w: v2 body of %d bytes", ErrMalformed, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, unexpected(err)
	}
	switch cmd {
	case 0: // LOCAL: the proxy's own connection; addresses are ignored
		return Header{}, nil
	case 1: // PROXY
	default:
		return Header{}, fmt.Errorf("%w: v2 command %d", ErrMalformed, cmd)
	}
	if proto != 1 { // only STREAM (TCP) carries RTMP and HTTP
		return Header{}, fmt.Errorf("%w: v2 transport %d", ErrMalformed, proto)
	}
	var size int
	switch family {
	case 1:
		size = 4
	case 2:
		size = 16
	default:
		return Header{}, fmt.Errorf("%w: v2 address family %d", ErrMalformed, family)
	}
	if len(body) < 2*size+4 {
		return Header{}, fmt.Errorf("%w: v2 body of %d bytes for family %d", ErrMalformed, len(body), family)
	}
	src := &net.TCPAddr{IP: net.IP(bytes.Clone(body[:size])), Port: int(binary.BigEndian.Uint16(body[2*size:]))}
	dst := &net.TCPAddr{IP: net.IP(bytes.Clone(body[size : 2*size])), Port: int(binary.BigEndian.Uint16(body[2*size+2:]))}
	return Header{Source: src, Dest: dst}, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// truncate keeps a peer's bytes short in errors.
func truncate(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}
