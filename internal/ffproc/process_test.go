//go:build unix

package ffproc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// script writes a shell script standing for ffmpeg and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ffmpeg")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBackoff(t *testing.T) {
	b := Backoff{First: time.Second, Stable: 10 * time.Second}
	var got []time.Duration
	for _, ran := range []time.Duration{0, time.Second, 0, 0, 0, 0, 0, 0, 11 * time.Second, 0} {
		got = append(got, b.Next(ran))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30, 1, 2}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want %v seconds", got, want)
		}
	}
}

func TestProcessStop(t *testing.T) {
	// A process that ignores SIGTERM is killed after the timeout; one that
	// exited is left alone.
	path := script(t, "trap '' TERM\necho starting >&2\nsleep 30")
	p, err := Start(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the trap is set
	if !p.Stop(300 * time.Millisecond) {
		t.Error("Stop did not need to kill a process that ignores SIGTERM")
	}
	if exit := p.Exit(); !strings.Contains(exit, "starting") || !strings.Contains(exit, "killed") {
		t.Errorf("Exit() = %q, want its stderr and the signal", exit)
	}
	path = script(t, "exit 3")
	p, err = Start(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Stop(time.Second) {
		t.Error("Stop killed a process that had exited")
	}
	if err, _ := p.Result(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Result() = %v, want exit status 3", err)
	}
}
