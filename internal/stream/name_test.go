package stream

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// TestHostileNames checks the names an attacker would try on every way in:
// RTMP publish and play, HTTP-FLV and HLS URLs, the API and the events.
func TestHostileNames(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct{ app, stream string }{
		{"live", ".."},
		{"live", "."},
		{"..", "stream"},
		{"live", "../etc/passwd"},
		{"live", "..%2f..%2fetc%2fpasswd"},
		{"live", "%2e%2e"},
		{"live", "%2E%2E"},
		{"live", "..\\..\\windows"},
		{"live", "a\\b"},
		{"live", "/etc/passwd"},
		{"/etc", "passwd"},
		{"live", "C:\\x"},
		{"live", "a\x00b"},
		{"live", "\x00"},
		{"live", "a\nb"},
		{"live", "a\rb"},
		{"live", "a\tb"},
		{"live", "a\x1bb"},
		{"live", "a\x7fb"},
		{"live", "a b"},
		{"live", "a:b"},
		{"live", "a*b"},
		{"live", "a?b"},
		{"live", long},
		{long, "stream"},
		{"live", strings.Repeat("\x00", 300)},
		{"live", strings.Repeat("é", 150)},
		{"", "stream"},
		{"live", ""},
		{"API", "x"},
		{"Socket.IO", "x"},
	} {
		for _, name := range []string{tc.app + "/" + tc.stream} {
			n, err := NewName(tc.app, tc.stream)
			if err == nil {
				t.Errorf("NewName(%q, %q) = %q, want an error", tc.app, tc.stream, n)
				continue
			}
			if !errors.Is(err, ErrBadName) {
				t.Errorf("NewName(%q, %q): %v does not wrap ErrBadName", tc.app, tc.stream, err)
			}
			if _, err := ParseName(name); err == nil {
				t.Errorf("ParseName(%q) accepted", name)
			}
			// The error is safe to log and to answer with.
			msg := err.Error()
			if len(msg) > 400 || strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Errorf("NewName(%q, %q) error is not safe to log: %q", tc.app, tc.stream, msg)
			}
			// Decoding a URL's escapes never turns a refused name into an
			// accepted one that names a file elsewhere.
			if dec, err := url.PathUnescape(tc.stream); err == nil {
				if n, err := NewName(tc.app, dec); err == nil && (strings.Contains(string(n), "..") || strings.ContainsAny(string(n), "\\\x00")) {
					t.Errorf("decoded %q gives %q", tc.stream, n)
				}
			}
		}
	}
	// The longest names allowed, and a dot inside a name, are fine.
	for _, ok := range [][2]string{
		{strings.Repeat("a", MaxAppLen), strings.Repeat("b", MaxStreamLen)},
		{"live", "a..b"},
		{"live", "cam-1_hd.v2"},
	} {
		if _, err := NewName(ok[0], ok[1]); err != nil {
			t.Errorf("NewName(%q, %q): %v", ok[0], ok[1], err)
		}
	}
	if _, err := NewName(strings.Repeat("a", MaxAppLen+1), "x"); err == nil {
		t.Error("app one byte over the limit accepted")
	}
	if _, err := NewName("live", strings.Repeat("b", MaxStreamLen+1)); err == nil {
		t.Error("stream one byte over the limit accepted")
	}
}
