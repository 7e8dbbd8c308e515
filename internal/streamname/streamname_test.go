package streamname

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
			n, err := New(tc.app, tc.stream)
			if err == nil {
				t.Errorf("New(%q, %q) = %q, want an error", tc.app, tc.stream, n)
				continue
			}
			if !errors.Is(err, ErrBad) {
				t.Errorf("New(%q, %q): %v does not wrap ErrBad", tc.app, tc.stream, err)
			}
			if _, err := Parse(name); err == nil {
				t.Errorf("Parse(%q) accepted", name)
			}
			// The error is safe to log and to answer with.
			msg := err.Error()
			if len(msg) > 400 || strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Errorf("New(%q, %q) error is not safe to log: %q", tc.app, tc.stream, msg)
			}
			// Decoding a URL's escapes never turns a refused name into an
			// accepted one that names a file elsewhere.
			if dec, err := url.PathUnescape(tc.stream); err == nil {
				if n, err := New(tc.app, dec); err == nil && (strings.Contains(string(n), "..") || strings.ContainsAny(string(n), "\\\x00")) {
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
		if _, err := New(ok[0], ok[1]); err != nil {
			t.Errorf("New(%q, %q): %v", ok[0], ok[1], err)
		}
	}
	if _, err := New(strings.Repeat("a", MaxAppLen+1), "x"); err == nil {
		t.Error("app one byte over the limit accepted")
	}
	if _, err := New("live", strings.Repeat("b", MaxStreamLen+1)); err == nil {
		t.Error("stream one byte over the limit accepted")
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"live/stream", true},
		{"live/Stream_1.2-x", true},
		{"live/", false},
		{"/stream", false},
		{"live/../../etc", false},
		{"live/a/b", false},
		{"live/.hidden", false},
		{"api/stream", false},
		{"metrics/x", false},
		{"live/" + string(make([]byte, 200)), false},
		{"live/naïve", false},
	} {
		_, err := Parse(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Parse(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if app, _, _ := strings.Cut(tc.in, "/"); tc.ok && CheckApp(app) != nil {
			t.Errorf("CheckApp(%q) = %v for the app of a valid name", app, CheckApp(app))
		}
	}
	for _, app := range []string{"", "API", "vod", ".x", "a/b", "naïve"} {
		if CheckApp(app) == nil {
			t.Errorf("CheckApp(%q) = nil, want an error", app)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"live/stream", "live/../x", "api/x", "a/b/c", "live/.x", "live/naïve", "/", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			// Safe to log: short and printable, whatever the input.
			if msg := err.Error(); len(msg) > 400 || strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("Parse(%q) error %q", s, msg)
			}
			return
		}
		// A valid name is safe as a path segment pair and a log field.
		if n.App() == "" || n.Stream() == "" || n.App()+"/"+n.Stream() != string(n) {
			t.Fatalf("Parse(%q) = %q", s, n)
		}
		for _, c := range []byte(n) {
			if c == '\\' || c < 0x20 || c >= 0x7f {
				t.Fatalf("Parse(%q) kept byte %#x", s, c)
			}
		}
		if len(n.Stream()) > MaxStreamLen || n.Stream()[0] == '.' || n.Stream() == ".." {
			t.Fatalf("Parse(%q) = %q", s, n)
		}
	})
}
