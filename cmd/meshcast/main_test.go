package main

import (
	"log/slog"
	"runtime"
	"testing"
)

// With one CPU the runtime gets a second processor, unless GOMAXPROCS is
// set.
func TestSecondProc(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	log := slog.New(slog.DiscardHandler)
	secondProc([]string{"GOMAXPROCS=1", "HOME=/"}, log)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("with GOMAXPROCS set: %d processors, want 1", n)
	}
	secondProc([]string{"HOME=/"}, log)
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("one CPU: %d processors, want 2", n)
	}
	runtime.GOMAXPROCS(4)
	secondProc(nil, log)
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Errorf("four CPUs: %d processors, want 4", n)
	}
}
