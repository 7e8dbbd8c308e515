package source

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"rtsp://admin:pw@10.0.0.9:554/stream1":                   "rtsp://10.0.0.9:554/stream1",
		"rtmp://h/live/cam?token=T":                              "rtmp://h/live/cam?token=xxx",
		"srt://h:8890?passphrase=ten-chars-ok&streamid=read:a/b": "srt://h:8890?passphrase=xxx&streamid=xxx",
		"https://u:p@cdn.example.net/live/index.m3u8?sig=S":      "https://cdn.example.net/live/index.m3u8?sig=xxx",
	} {
		if got := Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
	for _, c := range []struct{ raw, msg string }{
		{"rtsp://admin:s3cret@10.0.0.9/stream1", "dial rtsp://admin:s3cret@10.0.0.9/stream1: refused; auth s3cret"},
		// net/http hides the password itself, not the query.
		{"http://admin:s3cret@h/live/index.m3u8?key=s3cret2", `Get "http://admin:***@h/live/index.m3u8?key=s3cret2": EOF`},
		{"srt://h:1?passphrase=s3cret-pass%2Fx", "handshake with passphrase s3cret-pass/x failed"},
	} {
		msg := redactErr(errors.New(c.msg), c.raw)
		for _, secret := range []string{"s3cret", "admin"} {
			if strings.Contains(msg, secret) {
				t.Errorf("redactErr left %q: %q", secret, msg)
			}
		}
	}
}
