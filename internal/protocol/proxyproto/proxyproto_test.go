package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// v2 builds a version 2 header: command, family/transport byte, body.
func v2(cmd, famProto byte, body []byte) []byte {
	b := append([]byte{}, v2Sig...)
	b = append(b, 0x20|cmd, famProto)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func v2TCP4(src, dst string, sport, dport uint16, tlvs []byte) []byte {
	body := append(net.ParseIP(src).To4(), net.ParseIP(dst).To4()...)
	body = binary.BigEndian.AppendUint16(body, sport)
	body = binary.BigEndian.AppendUint16(body, dport)
	return v2(1, 0x11, append(body, tlvs...))
}

func TestRead(t *testing.T) {
	v6body := append(net.ParseIP("2001:db8::1").To16(), net.ParseIP("2001:db8::2").To16()...)
	v6body = append(v6body, 0x30, 0x39, 0x07, 0x8f)
	cases := []struct {
		name     string
		in       []byte
		src, dst string // "" for none
	}{
		{"v1 tcp4", []byte("PROXY TCP4 203.0.113.7 127.0.0.1 56324 1935\r\n"), "203.0.113.7:56324", "127.0.0.1:1935"},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 ::1 443 1935\r\n"), "[2001:db8::1]:443", "[::1]:1935"},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), "", ""},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), "", ""},
		{"v2 tcp4", v2TCP4("198.51.100.9", "10.0.0.5", 40000, 1935, nil), "198.51.100.9:40000", "10.0.0.5:1935"},
		{"v2 tcp4 with TLVs", v2TCP4("198.51.100.9", "10.0.0.5", 40000, 1935, []byte{0x04, 0, 1, 0xAA}), "198.51.100.9:40000", "10.0.0.5:1935"},
		{"v2 tcp6", v2(1, 0x21, v6body), "[2001:db8::1]:12345", "[2001:db8::2]:1935"},
		{"v2 local", v2(0, 0x00, nil), "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The connection's own bytes follow the header and stay unread.
			r := bytes.NewReader(append(append([]byte{}, tc.in...), 0x03, 'R'))
			h, err := Read(r)
			if err != nil {
				t.Fatal(err)
			}
			if got := addr(h.Source); got != tc.src {
				t.Errorf("source %q, want %q", got, tc.src)
			}
			if got := addr(h.Dest); got != tc.dst {
				t.Errorf("dest %q, want %q", got, tc.dst)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "\x03R" {
				t.Errorf("read past the header: left %q", rest)
			}
		})
	}
}

func addr(a *net.TCPAddr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func TestReadRefuses(t *testing.T) {
	long := "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n"
	cases := map[string][]byte{
		"rtmp":               {0x03, 0, 0, 0},
		"v1 without CRLF":    []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
		"v1 too long":        []byte(long),
		"v1 bad protocol":    []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
		"v1 v6 in tcp4":      []byte("PROXY TCP4 ::1 ::1 1 2\r\n"),
		"v1 leading zero":    []byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
		"v1 port too big":    []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
		"v1 missing field":   []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
		"v1 truncated":       []byte("PROXY TCP4 1.2.3.4"),
		"v2 bad signature":   append([]byte("\r\n\r\n\x00\r\nQUIX\n"), 0x21, 0x11, 0, 0),
		"v2 version 3":       append(append([]byte{}, v2Sig...), 0x31, 0x11, 0, 0),
		"v2 udp":             v2(1, 0x12, make([]byte, 12)),
		"v2 unix":            v2(1, 0x31, make([]byte, 216)),
		"v2 short body":      v2(1, 0x11, make([]byte, 11)),
		"v2 huge body":       v2(1, 0x11, make([]byte, maxV2Body+1)),
		"v2 truncated body":  v2TCP4("1.2.3.4", "5.6.7.8", 1, 2, nil)[:20],
		"v2 unknown command": v2(2, 0x11, make([]byte, 12)),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(in))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v is neither ErrMalformed nor io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func TestStarts(t *testing.T) {
	for _, b := range []byte{'P', '\r'} {
		if !Starts(b) {
			t.Errorf("Starts(%q) = false", b)
		}
	}
	for _, b := range []byte{0x03, 'G', 0x16, 0} {
		if Starts(b) {
			t.Errorf("Starts(0x%02x) = true", b)
		}
	}
}

// FuzzRead: any input yields a header or an error, never a panic, and a
// header never claims bytes beyond what the input held.
func FuzzRead(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.7 127.0.0.1 56324 1935\r\n"))
	f.Add(v2TCP4("198.51.100.9", "10.0.0.5", 40000, 1935, []byte{1, 0, 2, 'h', '2'}))
	f.Add(v2(0, 0, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := Read(r)
		if err != nil {
			return
		}
		if (h.Source == nil) != (h.Dest == nil) {
			t.Fatalf("one address without the other: %+v", h)
		}
		if h.Source != nil && h.Source.IP.To16() == nil {
			t.Fatalf("bad source IP %v", h.Source.IP)
		}
	})
}
