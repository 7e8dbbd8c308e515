package ffproc

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 16}
	tb.Write([]byte("first\n"))
	if got := tb.String(); got != "first" {
		t.Fatalf("short: %q", got)
	}
	tb.Write([]byte("a line that is cut\nlast line\n"))
	if got := tb.String(); got != "last line" {
		t.Fatalf("after overflow: %q (buffer %q)", got, tb.buf)
	}
	if len(tb.buf) > 16 {
		t.Fatalf("kept %d bytes", len(tb.buf))
	}
	big := &tailBuffer{max: StderrTail}
	line := strings.Repeat("x", 99) + "\n"
	for range 1000 {
		if n, err := big.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := big.String(); len(got) > StderrTail || !strings.HasSuffix(got, "xxx") || strings.HasPrefix(got, "\n") {
		t.Fatalf("bounded tail: %d bytes", len(got))
	}
}

func TestDescribeExit(t *testing.T) {
	if got := DescribeExit(nil, ""); got != "ffmpeg exited" {
		t.Errorf("clean: %q", got)
	}
	if got := DescribeExit(errString("exit status 1"), "rtmp://x: Connection refused"); got != "rtmp://x: Connection refused\nffmpeg: exit status 1" {
		t.Errorf("error: %q", got)
	}
	if got := DescribeExit(errString("signal: killed"), ""); got != "ffmpeg: signal: killed" {
		t.Errorf("killed: %q", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
