package rtmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// readAll reads messages until an error, which it returns with them.
func readAll(r *ChunkReader) ([]*Message, error) {
	var ms []*Message
	for {
		m, err := r.ReadMessage()
		if err != nil {
			return ms, err
		}
		ms = append(ms, m)
	}
}

// setChunkSize is a Set Chunk Size message carrying v.
func setChunkSize(v uint32) []byte {
	return AppendMessage(nil, CSIDControl, TypeSetChunkSize, 0, 0, AppendUint32(nil, v), DefaultChunkSize)
}

// type0 is a type 0 chunk header, with the extended timestamp field when
// ts needs it.
func type0(csid, ts, length uint32, typeID uint8, streamID uint32) []byte {
	field := min(ts, 0xffffff)
	b := appendBasicHeader(nil, 0, csid)
	b = append(b, byte(field>>16), byte(field>>8), byte(field), byte(length>>16), byte(length>>8), byte(length), typeID)
	b = binary.LittleEndian.AppendUint32(b, streamID)
	if field == 0xffffff {
		b = binary.BigEndian.AppendUint32(b, ts)
	}
	return b
}

// delta is a type 1 (with length and type) or type 2 chunk header.
func delta(format, csid uint8, d, length uint32, typeID uint8) []byte {
	field := min(d, 0xffffff)
	b := []byte{format<<6 | csid, byte(field >> 16), byte(field >> 8), byte(field)}
	if format == 1 {
		b = append(b, byte(length>>16), byte(length>>8), byte(length), typeID)
	}
	if field == 0xffffff {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return b
}

// type3 is a type 3 chunk header, followed by ext when given.
func type3(csid uint8, ext ...uint32) []byte {
	b := []byte{3<<6 | csid}
	for _, v := range ext {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

func TestSetChunkSize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		contain string
	}{
		{"0", setChunkSize(0), "set chunk size 0: chunk size out of range: must be 1 to 16777216"},
		{"MaxChunkSize+1", setChunkSize(MaxChunkSize + 1), "set chunk size 16777217: chunk size out of range"},
		{"2^31-1", setChunkSize(0x7fffffff), "set chunk size 2147483647: chunk size out of range"},
		{"2^32-1", setChunkSize(0xffffffff), "set chunk size 4294967295: chunk size out of range"},
		{"top bit and 4096", setChunkSize(0x80001000), "set chunk size 2147487744: chunk size out of range"},
		{"empty body", AppendMessage(nil, CSIDControl, TypeSetChunkSize, 0, 0, nil, 128), "set chunk size: 0-byte payload, want 4"},
		{"3-byte body", AppendMessage(nil, CSIDControl, TypeSetChunkSize, 0, 0, []byte{0, 0, 16}, 128), "set chunk size: 3-byte payload, want 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A message after it shows the reader stopped at the bad one.
			in := append(tc.in, AppendMessage(nil, 3, TypeCommandAMF0, 0, 0, []byte("x"), 128)...)
			ms, err := readAll(NewChunkReader(bytes.NewReader(in)))
			if len(ms) != 0 || !errors.Is(err, ErrChunkSize) || !strings.Contains(err.Error(), tc.contain) {
				t.Fatalf("%d messages, err %v; want ErrChunkSize saying %q", len(ms), err, tc.contain)
			}
		})
	}
	for _, size := range []uint32{1, 2, 4096, MaxChunkSize} {
		payload := bytes.Repeat([]byte{0xab}, 3000)
		in := append(setChunkSize(size), AppendMessage(nil, 6, TypeVideo, 1, 40, payload, int(size))...)
		r := NewChunkReader(bytes.NewReader(in))
		m, err := r.ReadMessage()
		if err != nil || !bytes.Equal(m.Payload, payload) || r.ChunkSize() != size {
			t.Errorf("chunk size %d: %v", size, err)
		}
	}
}

// interleave splits each payload into chunks of size and sends them
// round-robin, each message on its own chunk stream.
func interleave(size int, payloads ...[]byte) []byte {
	var b []byte
	for i, p := range payloads {
		b = append(b, type0(uint32(3+i), uint32(10*i), uint32(len(p)), TypeVideo, 1)...)
		k := min(size, len(p))
		b = append(b, p[:k]...)
		payloads[i] = p[k:]
	}
	for more := true; more; {
		more = false
		for i, p := range payloads {
			if len(p) == 0 {
				continue
			}
			k := min(size, len(p))
			b = append(append(b, type3(uint8(3+i))...), p[:k]...)
			payloads[i] = p[k:]
			more = more || len(payloads[i]) > 0
		}
	}
	return b
}

// TestChunkSizeOne: a chunk size of 1 is legal, and messages of several KB
// arrive intact, also when interleaved byte by byte across chunk streams.
func TestChunkSizeOne(t *testing.T) {
	a, b := make([]byte, 5000), make([]byte, 3333)
	for i := range a {
		a[i] = byte(i * 7)
	}
	for i := range b {
		b[i] = byte(i * 13)
	}
	in := append(setChunkSize(1), AppendMessage(nil, 6, TypeVideo, 1, 40, a, 1)...)
	in = append(in, interleave(1, bytes.Clone(a), bytes.Clone(b))...)
	ms, err := readAll(NewChunkReader(bytes.NewReader(in)))
	if err != io.EOF || len(ms) != 3 {
		t.Fatalf("%d messages, %v", len(ms), err)
	}
	// The interleaved message that ends first is b's.
	for i, want := range [][]byte{a, b, a} {
		if !bytes.Equal(ms[i].Payload, want) || ms[i].Length != uint32(len(want)) {
			t.Errorf("message %d: %d bytes, want %d", i, len(ms[i].Payload), len(want))
		}
	}

	// Memory grows by doubling, not per chunk: a 64 KiB message at chunk
	// size 1 takes a handful of allocations.
	big := append(setChunkSize(1), AppendMessage(nil, 6, TypeVideo, 1, 40, make([]byte, 64<<10), 1)...)
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := NewChunkReader(bytes.NewReader(big)).ReadMessage(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 20 {
		t.Errorf("%.0f allocations to read 64 KiB at chunk size 1, want <= 20", allocs)
	}
}

// BenchmarkChunkSize reads one message at chunk sizes 1 and 4096 for
// several message sizes: the cost per byte (MB/s) stays flat as messages
// grow, so nothing is quadratic.
func BenchmarkChunkSize(b *testing.B) {
	for _, chunk := range []int{1, 4096} {
		for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("chunk=%d/msg=%dKiB", chunk, size>>10), func(b *testing.B) {
				in := append(setChunkSize(uint32(chunk)), AppendMessage(nil, 6, TypeVideo, 1, 40, make([]byte, size), chunk)...)
				rd := bytes.NewReader(in)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					rd.Reset(in)
					if _, err := NewChunkReader(rd).ReadMessage(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// heapAllocated reports the bytes allocated while f runs.
func heapAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestAnnouncedSizeNotAllocated: headers announcing the largest message the
// format can describe (16 MiB - 1) followed by little or no body cost
// memory in proportion to the bytes sent, not to what was announced, on one
// chunk stream or on every chunk stream a connection may open.
func TestAnnouncedSizeNotAllocated(t *testing.T) {
	const announced = 0xffffff
	read := func(in []byte) (error, uint64) {
		var err error
		n := heapAllocated(func() {
			r := NewChunkReader(bytes.NewReader(in))
			r.MaxMessageSize = MaxChunkSize
			_, err = readAll(r)
		})
		return err, n
	}

	// The whole message in one chunk: nothing of it arrives.
	one := append(setChunkSize(MaxChunkSize), type0(6, 0, announced, TypeVideo, 1)...)
	if err, n := read(one); !errors.Is(err, io.ErrUnexpectedEOF) || n > 16<<10 {
		t.Errorf("one header at chunk size 16 MiB: %v, %d bytes allocated; want io.ErrUnexpectedEOF, <= 16 KiB", err, n)
	}

	// Every chunk stream at once, each with its first 128-byte chunk.
	var many []byte
	for i := range MaxChunkStreams {
		csid := uint32(3 + i)
		many = append(many, type0(csid, 0, announced, TypeVideo, 1)...)
		many = append(many, make([]byte, DefaultChunkSize)...)
	}
	err, n := read(many)
	if !errors.Is(err, io.EOF) || n > 256<<10 {
		t.Errorf("%d chunk streams announcing %d bytes: %v, %d bytes allocated; want io.EOF, <= 256 KiB", MaxChunkStreams, announced, err, n)
	}
	t.Logf("%d chunk streams announcing 16 MiB each with %d bytes sent: %d KiB allocated", MaxChunkStreams, len(many), n>>10)

	// One more chunk stream is refused.
	more := append(many, AppendMessage(nil, 3+MaxChunkStreams, TypeVideo, 1, 0, []byte{1}, DefaultChunkSize)...)
	if err, _ := read(more); !errors.Is(err, ErrChunkStreams) || !strings.Contains(err.Error(), "max 64") {
		t.Errorf("chunk stream %d: %v, want ErrChunkStreams", MaxChunkStreams+1, err)
	}
}

// TestPendingLimit: bytes held in incomplete messages across chunk streams
// are capped at twice MaxMessageSize; Abort releases them.
func TestPendingLimit(t *testing.T) {
	var in []byte
	for i := range 4 {
		in = append(in, type0(uint32(3+i), 0, 250, TypeVideo, 1)...)
		in = append(in, make([]byte, 128)...)
	}
	// Abort chunk stream 3, then fill it again.
	in = append(in, AppendMessage(nil, CSIDControl, TypeAbort, 0, 0, AppendUint32(nil, 3), 128)...)
	in = append(in, type0(3, 0, 250, TypeVideo, 1)...)
	in = append(in, make([]byte, 128)...)
	r := NewChunkReader(bytes.NewReader(in))
	r.MaxMessageSize = 300 // 4*128 held is within 600; a fifth chunk is not
	if _, err := readAll(r); err != io.EOF || r.pending != 4*128 {
		t.Fatalf("err %v, %d bytes held; want io.EOF, 512", err, r.pending)
	}
	in = append(in, type0(10, 0, 250, TypeVideo, 1)...)
	in = append(in, make([]byte, 128)...)
	r = NewChunkReader(bytes.NewReader(in))
	r.MaxMessageSize = 300
	if _, err := readAll(r); !errors.Is(err, ErrPendingBytes) || !strings.Contains(err.Error(), "512 held, 128 more, max 600") {
		t.Fatalf("err %v, want ErrPendingBytes", err)
	}
}

// TestMissingHeader: a type 1, 2 or 3 chunk on a chunk stream that has had
// no type 0 chunk has nothing to inherit from.
func TestMissingHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"type 1", delta(1, 5, 10, 4, TypeVideo), "chunk stream 5: type 1 chunk before any type 0 chunk"},
		{"type 2", delta(2, 5, 10, 0, 0), "chunk stream 5: type 2 chunk before any type 0 chunk"},
		{"type 3", type3(5), "chunk stream 5: type 3 chunk before any type 0 chunk"},
		{"type 3, two-byte ID", []byte{0xc0, 36, 1, 2}, "chunk stream 100: type 3 chunk before any type 0 chunk"},
		{"type 3, three-byte ID", []byte{0xc1, 0x10, 0x27, 1}, "chunk stream 10064: type 3 chunk before any type 0 chunk"},
		// Another chunk stream's header does not count.
		{"after type 0 on another stream", append(append(type0(4, 0, 1, TypeVideo, 1), 'x'), type3(5)...), "chunk stream 5: type 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(NewChunkReader(bytes.NewReader(tc.in)))
			if !errors.Is(err, ErrMissingHeader) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrMissingHeader saying %q", err, tc.want)
			}
		})
	}
}

// TestExtendedTimestamps decodes timestamps around the 24-bit field's limit
// and across the 32-bit wrap, on type 0, 1, 2 and 3 chunks, from senders
// that repeat the extended timestamp field in type 3 chunks (the spec,
// ffmpeg, librtmp, GStreamer) and from some that do not.
func TestExtendedTimestamps(t *testing.T) {
	p := func(s string, n int) []byte { return bytes.Repeat([]byte(s), n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	type msg struct {
		ts      uint32
		payload []byte
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want []msg
	}{
		{"0xFFFFFE fits the field", cat(type0(4, 0xfffffe, 2, TypeAudio, 1), p("a", 2)),
			[]msg{{0xfffffe, p("a", 2)}}},
		{"0xFFFFFF needs the extended field", cat(type0(4, 0xffffff, 2, TypeAudio, 1), p("a", 2)),
			[]msg{{0xffffff, p("a", 2)}}},
		{"0x1000000", cat(type0(4, 0x1000000, 2, TypeAudio, 1), p("a", 2)),
			[]msg{{0x1000000, p("a", 2)}}},
		{"0xFFFFFFFF", cat(type0(4, 0xffffffff, 2, TypeAudio, 1), p("a", 2)),
			[]msg{{0xffffffff, p("a", 2)}}},
		{"the field saying 0xFFFFFF is not a timestamp", cat(type0(4, 0xffffff, 0, TypeAudio, 1)[:12], []byte{0, 0, 0, 5}, p("a", 0)),
			[]msg{{5, nil}}},

		{"continuations repeat the field", cat(type0(4, 0x1000000, 300, TypeVideo, 1), p("a", 128), type3(4, 0x1000000), p("b", 128), type3(4, 0x1000000), p("c", 44)),
			[]msg{{0x1000000, cat(p("a", 128), p("b", 128), p("c", 44))}}},
		{"continuations omit the field", cat(type0(4, 0x1000000, 300, TypeVideo, 1), p("a", 128), type3(4), p("b", 128), type3(4), p("c", 44)),
			[]msg{{0x1000000, cat(p("a", 128), p("b", 128), p("c", 44))}}},
		{"continuations repeat 0xFFFFFF", cat(type0(4, 0xffffff, 200, TypeVideo, 1), p("a", 128), type3(4, 0xffffff), p("b", 72)),
			[]msg{{0xffffff, cat(p("a", 128), p("b", 72))}}},
		{"continuation with the field omitted, payload short", cat(type0(4, 0x1000000, 130, TypeVideo, 1), p("a", 128), type3(4), p("b", 2)),
			[]msg{{0x1000000, cat(p("a", 128), p("b", 2))}}},
		{"no field after a header without one", cat(type0(4, 0xfffffe, 130, TypeVideo, 1), p("a", 128), type3(4), []byte{0, 0xff, 0xff, 0xfe}[:2]),
			[]msg{{0xfffffe, cat(p("a", 128), []byte{0, 0xff})}}},

		{"delta across the 32-bit wrap", cat(type0(4, 0xffffff00, 1, TypeAudio, 1), p("a", 1), delta(2, 4, 0x200, 0, 0), p("b", 1), type3(4), p("c", 1)),
			[]msg{{0xffffff00, p("a", 1)}, {0x100, p("b", 1)}, {0x300, p("c", 1)}}},
		{"type 1 delta across the wrap", cat(type0(4, 0xfffffff0, 1, TypeAudio, 1), p("a", 1), delta(1, 4, 0x20, 2, TypeVideo), p("b", 2)),
			[]msg{{0xfffffff0, p("a", 1)}, {0x10, p("b", 2)}}},
		{"extended delta, repeated in continuations", cat(type0(4, 1000, 1, TypeAudio, 1), p("a", 1),
			delta(1, 4, 0x1000000, 200, TypeVideo), p("b", 128), type3(4, 0x1000000), p("c", 72),
			type3(4, 0x1000000), p("d", 128), type3(4, 0x1000000), p("e", 72)),
			[]msg{{1000, p("a", 1)}, {1000 + 0x1000000, cat(p("b", 128), p("c", 72))}, {1000 + 0x2000000, cat(p("d", 128), p("e", 72))}}},
		{"extended delta, continuations repeat the absolute timestamp", cat(type0(4, 1000, 1, TypeAudio, 1), p("a", 1),
			delta(2, 4, 0x1000000, 0, 0), p("b", 1), delta(1, 4, 0x1000000, 200, TypeVideo), p("c", 128), type3(4, 1000+0x2000000), p("d", 72)),
			[]msg{{1000, p("a", 1)}, {1000 + 0x1000000, p("b", 1)}, {1000 + 0x2000000, cat(p("c", 128), p("d", 72))}}},
		{"extended delta across the wrap", cat(type0(4, 0xffffff00, 1, TypeAudio, 1), p("a", 1), delta(2, 4, 0xffffffff, 0, 0), p("b", 1)),
			[]msg{{0xffffff00, p("a", 1)}, {0xfffffeff, p("b", 1)}}},

		// §5.3.1.2.4: a type 3 chunk right after a type 0 chunk takes the
		// type 0 chunk's timestamp as its delta.
		{"type 3 after type 0 repeats its timestamp as delta", cat(type0(4, 40, 1, TypeAudio, 1), p("a", 1), type3(4), p("b", 1), type3(4), p("c", 1)),
			[]msg{{40, p("a", 1)}, {80, p("b", 1)}, {120, p("c", 1)}}},
		{"type 3 after an extended type 0", cat(type0(4, 0x1000000, 1, TypeAudio, 1), p("a", 1), type3(4, 0x1000000), p("b", 1)),
			[]msg{{0x1000000, p("a", 1)}, {0x2000000, p("b", 1)}}},
		{"type 3 after type 2", cat(type0(4, 1000, 1, TypeAudio, 1), p("a", 1), delta(2, 4, 33, 0, 0), p("b", 1), type3(4), p("c", 1)),
			[]msg{{1000, p("a", 1)}, {1033, p("b", 1)}, {1066, p("c", 1)}}},
		{"type 2 delta 0", cat(type0(4, 1000, 1, TypeAudio, 1), p("a", 1), delta(2, 4, 0, 0, 0), p("b", 1), type3(4), p("c", 1)),
			[]msg{{1000, p("a", 1)}, {1000, p("b", 1)}, {1000, p("c", 1)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bufSize := range []int{16, 2 << 10} {
				ms, err := readAll(NewChunkReaderSize(bytes.NewReader(tc.in), bufSize))
				if err != io.EOF {
					t.Fatalf("buffer %d: %v", bufSize, err)
				}
				if len(ms) != len(tc.want) {
					t.Fatalf("buffer %d: %d messages, want %d", bufSize, len(ms), len(tc.want))
				}
				for i, w := range tc.want {
					if ms[i].Timestamp != w.ts || !bytes.Equal(ms[i].Payload, w.payload) {
						t.Errorf("buffer %d: message %d: ts %#x payload %q, want %#x %q", bufSize, i, ms[i].Timestamp, ms[i].Payload, w.ts, w.payload)
					}
				}
			}
		})
	}
}

// TestMidMessageHeader: a type 0, 1 or 2 chunk in the middle of a message
// continues it when it announces the same length and type (as ffmpeg reads
// it) and otherwise drops it for a new message; either way every payload is
// exactly as long as its header says.
func TestMidMessageHeader(t *testing.T) {
	p := func(s string, n int) []byte { return bytes.Repeat([]byte(s), n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name   string
		in     []byte
		want   [][]byte
		wantTS []uint32
	}{
		{"type 0 with another length", cat(type0(4, 10, 200, TypeVideo, 1), p("a", 128), type0(4, 20, 3, TypeVideo, 1), p("b", 3)),
			[][]byte{p("b", 3)}, []uint32{20}},
		{"type 1 with another type", cat(type0(4, 10, 200, TypeVideo, 1), p("a", 128), delta(1, 4, 5, 200, TypeAudio), p("b", 128), type3(4), p("c", 72)),
			[][]byte{cat(p("b", 128), p("c", 72))}, []uint32{15}},
		{"type 0 with the same length and type", cat(type0(4, 10, 200, TypeVideo, 1), p("a", 128), type0(4, 20, 200, TypeVideo, 1), p("b", 72)),
			[][]byte{cat(p("a", 128), p("b", 72))}, []uint32{10}},
		{"type 2 mid-message sets the next delta", cat(type0(4, 10, 200, TypeVideo, 1), p("a", 128), delta(2, 4, 5, 0, 0), p("b", 72), type3(4), p("c", 128), type3(4), p("d", 72)),
			[][]byte{cat(p("a", 128), p("b", 72)), cat(p("c", 128), p("d", 72))}, []uint32{10, 15}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewChunkReader(bytes.NewReader(tc.in))
			ms, err := readAll(r)
			if err != io.EOF {
				t.Fatal(err)
			}
			if len(ms) != len(tc.want) {
				t.Fatalf("%d messages, want %d", len(ms), len(tc.want))
			}
			for i := range ms {
				if !bytes.Equal(ms[i].Payload, tc.want[i]) || ms[i].Length != uint32(len(ms[i].Payload)) || ms[i].Timestamp != tc.wantTS[i] {
					t.Errorf("message %d: ts %d, %d of %d bytes, want ts %d, %d bytes", i, ms[i].Timestamp, len(ms[i].Payload), ms[i].Length, tc.wantTS[i], len(tc.want[i]))
				}
			}
			if r.pending != 0 {
				t.Errorf("%d bytes still held", r.pending)
			}
		})
	}
}

// TestSkimToggle: turning Skim on or off mid-message applies from the next
// message, so a message is never half buffered and half skimmed.
func TestSkimToggle(t *testing.T) {
	payload := make([]byte, 300)
	for i := range payload {
		payload[i] = byte(i)
	}
	in := AppendMessage(nil, 6, TypeVideo, 1, 40, payload, 128)
	in = append(in, AppendMessage(nil, 6, TypeVideo, 1, 80, payload, 128)...)
	// Cut the first message after its first chunk, switch, read on.
	r := NewChunkReader(bytes.NewReader(in))
	if m, err := r.readChunk(); m != nil || err != nil {
		t.Fatalf("first chunk: %v, %v", m, err)
	}
	r.Skim = true
	m, err := r.ReadMessage()
	if err != nil || !bytes.Equal(m.Payload, payload) || m.Length != 300 {
		t.Fatalf("message started unskimmed: %v, %d of %d bytes", err, len(m.Payload), m.Length)
	}
	m, err = r.ReadMessage()
	if err != nil || !bytes.Equal(m.Payload, payload[:SkimPrefix]) || m.Length != 300 {
		t.Fatalf("next message: %v, %d of %d bytes", err, len(m.Payload), m.Length)
	}
}
