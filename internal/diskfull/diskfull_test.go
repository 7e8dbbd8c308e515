//go:build linux

package diskfull

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

// /dev/full refuses every write with ENOSPC: a real write error from the
// kernel, however wrapped.
func TestDevFull(t *testing.T) {
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer f.Close()
	_, werr := f.Write([]byte("x"))
	if werr == nil {
		t.Fatal("write to /dev/full succeeded")
	}
	wrapped := fmt.Errorf("record: write: %w", werr)
	if !Is(wrapped) || Errno(wrapped) != "ENOSPC" {
		t.Fatalf("Is(%v) = %v, Errno = %q; want true, ENOSPC", wrapped, Is(wrapped), Errno(wrapped))
	}
	for _, err := range []error{nil, os.ErrNotExist, errors.New("no space left on device")} {
		if Is(err) {
			t.Errorf("Is(%v) = true", err)
		}
	}
}
