package vod

import (
	"bytes"
	"io"
	"testing"
)

// fuzzIndex checks that a file of kind k never makes the index builder
// panic or read outside the file, and that whatever indexes can be cut
// into segments and remuxed.
func fuzzIndex(t *testing.T, k Kind, data []byte) {
	r := bytes.NewReader(data)
	x, err := BuildIndex(k, r, int64(len(data)))
	if err != nil {
		return
	}
	for _, tr := range x.tracks() {
		for _, s := range tr.Samples {
			if s.Off < 0 || s.End() > int64(len(data)) {
				t.Fatalf("sample %+v outside a file of %d bytes", s, len(data))
			}
		}
	}
	segs := plan(x, 4*Clock)
	if len(segs) == 0 {
		t.Fatal("an index without segments")
	}
	for i := range segs[:min(len(segs), 3)] {
		segmentBytes(x, segs, i, r)
	}
	if rm, err := newRemuxed(x); err == nil {
		io.Copy(io.Discard, rm.reader(r))
	}
}

func FuzzIndexMP4(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { fuzzIndex(t, KindMP4, data) })
}

func FuzzIndexFLV(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { fuzzIndex(t, KindFLV, data) })
}
