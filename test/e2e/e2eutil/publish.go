//go:build unix

package e2eutil

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
)

// PublishFFmpeg starts the publish command from the README and returns a
// function that stops it.
func PublishFFmpeg(t *testing.T, url string) (stop func()) {
	t.Helper()
	in := Input(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-i", in, "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2000k", "-g", "60",
		"-c:a", "aac", "-b:a", "128k", "-f", "flv", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// TryPublish publishes name to addr with a Go RTMP client whose connection
// starts with header (a PROXY protocol line, or nothing), and returns the
// server's answer: nil, or why it refused.
func TryPublish(t *testing.T, addr, header, name string) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(header)); err != nil {
		return err
	}
	c, err := rtmp.NewClient(conn)
	if err != nil {
		return err
	}
	app, key, _ := strings.Cut(name, "/")
	if err := c.Connect(app, "rtmp://"+addr+"/"+app); err != nil {
		return err
	}
	return c.Publish(key)
}

// PublishFFmpegLoop publishes input.mp4 in a loop, copying its codecs (no
// encoding: the machine's CPU stays with the server), until the test ends.
func PublishFFmpegLoop(t *testing.T, url string) {
	t.Helper()
	in := Input(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", in, "-c", "copy", "-f", "flv", url)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// PublishLoop publishes file in a loop with -c copy until stop or the end
// of the test.
func PublishLoop(t *testing.T, file, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-re", "-stream_loop", "-1", "-i", file, "-c", "copy", "-f", "flv", url)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}
