package source

import (
	"errors"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"rtsp://admin:pw@10.0.0.9:554/stream1": "rtsp://10.0.0.9:554/stream1",
		"rtmp://h/live/cam?token=T":            "rtmp://h/live/cam?token=xxx",
	} {
		if got := Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
	raw := "rtsp://admin:s3cret@10.0.0.9/stream1"
	if msg := redactErr(errors.New("dial "+raw+": refused; auth s3cret"), raw); strings.Contains(msg, "s3cret") || strings.Contains(msg, "admin") {
		t.Errorf("redactErr left credentials: %q", msg)
	}
}
