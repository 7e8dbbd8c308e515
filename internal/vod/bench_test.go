package vod

import (
	"io"
	"os"
	"testing"
)

// benchClip indexes a 60 s 640x360 clip made by ffmpeg.
func benchClip(b *testing.B, k Kind) (*Index, *os.File) {
	b.Helper()
	p := makeClip(b, b.TempDir(), "bench."+string(k), 60)
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	info, _ := f.Stat()
	x, err := BuildIndex(k, f, info.Size())
	if err != nil {
		b.Fatal(err)
	}
	return x, f
}

// BenchmarkIndex measures indexing a 60 s file, as a first request does.
func BenchmarkIndex(b *testing.B) {
	for _, k := range []Kind{KindMP4, KindFLV} {
		b.Run(string(k), func(b *testing.B) {
			_, f := benchClip(b, k)
			info, _ := f.Stat()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := BuildIndex(k, f, info.Size()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSegment measures cutting one 4 s MPEG-TS segment from a file,
// as a segment's first request does; the bytes are those of the segment.
func BenchmarkSegment(b *testing.B) {
	x, f := benchClip(b, KindMP4)
	segs := plan(x, 4*Clock)
	seg, err := segmentBytes(x, segs, 1, f)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(seg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := segmentBytes(x, segs, 1, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRemux measures reading a 60 s FLV recording as MP4.
func BenchmarkRemux(b *testing.B) {
	x, f := benchClip(b, KindFLV)
	rm, err := newRemuxed(x)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(rm.size)
	b.ReportAllocs()
	buf := make([]byte, 32<<10)
	for b.Loop() {
		if _, err := io.CopyBuffer(io.Discard, rm.reader(f), buf); err != nil {
			b.Fatal(err)
		}
	}
}
