package push

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"rtmp://a.example.com/live2/abcd-secret-key":            "rtmp://a.example.com/live2/xxx",
		"rtmps://user:pw@a.example.com:443/app/key?token=T&x=1": "rtmps://a.example.com:443/app/xxx?token=xxx&x=xxx",
		"rtmp://h/app": "rtmp://h/xxx",
	} {
		if got := Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
	if msg := redactErr(errors.New(`dial rtmp://u:p@h/app/the-key?k=v: refused the-key`), "rtmp://u:p@h/app/the-key?k=v"); strings.Contains(msg, "the-key") || strings.Contains(msg, "u:p") {
		t.Errorf("redactErr left a secret: %q", msg)
	}
}

func TestTargets(t *testing.T) {
	for raw, ok := range map[string]bool{
		"rtmp://h/app/key":          true,
		"rtmps://h:443/app/key?k=v": true,
		"rtmp://h/app":              false,
		"http://h/app/key":          false,
		"srt://h:9000?streamid=x":   true,
		"rtmp:///app/key":           false,
	} {
		if _, err := parseTarget(raw); (err == nil) != ok {
			t.Errorf("parseTarget(%q): %v, want ok %v", raw, err, ok)
		}
	}
	m := &Manager{cfg: Config{NodeAddrs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.0.0.5")} }}}
	for a, ok := range map[string]bool{
		"127.0.0.1": false, "::1": false, "169.254.1.1": false, "fe80::1": false, "0.0.0.0": false,
		"10.0.0.5": false, "10.0.0.6": true, "203.0.113.9": true, "::ffff:127.0.0.1": false,
	} {
		if got := m.allowed(netip.MustParseAddr(a)); got != ok {
			t.Errorf("allowed(%s) = %v, want %v", a, got, ok)
		}
	}
}
