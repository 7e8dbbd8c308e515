package rtmp

import (
	"testing"
)

// TestAckEveryWindowFor10GiB simulates 10 GiB received in uneven steps:
// AckState, fed the 32-bit sequence number, fires at the same spacing
// before, across and after each 4 GiB wrap.
func TestAckEveryWindowFor10GiB(t *testing.T) {
	const window, step = 2500000, 1000003
	a := AckState{Window: window}
	var acks []uint64
	for total := uint64(0); total < 10<<30; total += step {
		if a.Due(uint32(total)) {
			acks = append(acks, total)
		}
	}
	// Acknowledged at the first step at least a window after the last.
	const gap = (window + step - 1) / step * step
	for i := 1; i < len(acks); i++ {
		if d := acks[i] - acks[i-1]; d != gap {
			t.Fatalf("acknowledgements at %d and %d bytes: %d apart, want %d", acks[i-1], acks[i], d, gap)
		}
	}
	if want := (10<<30)/gap - 1; len(acks) < want {
		t.Fatalf("%d acknowledgements over 10 GiB, want %d", len(acks), want)
	}
}

// repeatReader returns b over and over.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.b[r.off:])
		n += k
		r.off = (r.off + k) % len(r.b)
	}
	return n, nil
}

// TestAckAcrossReaderWrap drives a ChunkReader and AckState as a session
// does, with the reader's byte counter started just short of 4 GiB: the
// counter is 64-bit, BytesRead is its low 32 bits, and acknowledgements
// carry on every window after the 32-bit sequence number wraps.
func TestAckAcrossReaderWrap(t *testing.T) {
	const window = 100000
	msg := AppendMessage(nil, CSIDVideo, TypeVideo, 1, 0, make([]byte, 3000), DefaultChunkSize)
	r := NewChunkReader(&repeatReader{b: msg})
	r.cr.n = 1<<32 - 5*window // as if almost 4 GiB had gone by
	a := AckState{Window: window}
	a.Due(r.BytesRead()) // the acknowledgement sent before the test starts
	var acks []uint64
	for r.TotalBytesRead() < 1<<32+20*window {
		if _, err := r.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		if a.Due(r.BytesRead()) {
			total := r.TotalBytesRead()
			if seq := r.BytesRead(); seq != uint32(total) {
				t.Fatalf("sequence number %d for %d bytes, want the low 32 bits", seq, total)
			}
			acks = append(acks, total)
		}
	}
	after := 0
	for i, total := range acks {
		if total > 1<<32 {
			after++
		}
		if i > 0 {
			// BytesRead moves in buffer fills of at most 2 KiB (or a
			// chunk read past the buffer), so an acknowledgement is
			// due within one message of a full window.
			if d := total - acks[i-1]; d < window || d > window+uint64(len(msg))+2<<10 {
				t.Errorf("acknowledgements at %d and %d: %d apart, want %d plus at most one message", acks[i-1], total, d, window)
			}
		}
	}
	if after < 19 {
		t.Errorf("%d acknowledgements after the wrap over 20 windows, want >= 19 (%d before)", after, len(acks)-after)
	}
}
