package rtmp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"testing/iotest"
)

func TestChunkRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		chunkSize int
		ts        uint32
		csid      uint32
	}{
		{"small", 10, 128, 0, 3},
		{"exact chunk", 128, 128, 1000, 4},
		{"many chunks", 10000, 128, 40, 6},
		{"big chunk size", 100000, 4096, 33, 6},
		{"extended timestamp", 5000, 128, 0x1000000, 5},
		{"extended boundary", 300, 128, 0xffffff, 5},
		{"two-byte csid", 300, 128, 7, 100},
		{"three-byte csid", 300, 128, 7, 1000},
		{"empty", 0, 128, 7, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			var buf bytes.Buffer
			if tc.chunkSize != DefaultChunkSize {
				buf.Write(AppendMessage(nil, CSIDControl, TypeSetChunkSize, 0, 0, AppendSetChunkSize(nil, uint32(tc.chunkSize)), DefaultChunkSize))
			}
			wire := AppendMessage(nil, tc.csid, TypeVideo, 1, tc.ts, payload, tc.chunkSize)
			if got := MessageSize(tc.csid, tc.ts, tc.size, tc.chunkSize); got != len(wire) {
				t.Errorf("MessageSize %d, wrote %d", got, len(wire))
			}
			buf.Write(wire)
			buf.Write(wire)
			r := NewChunkReader(&buf)
			for i := 0; i < 2; i++ {
				m, err := r.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if m.Type != TypeVideo || m.StreamID != 1 || m.Timestamp != tc.ts || m.CSID != tc.csid || !bytes.Equal(m.Payload, payload) {
					t.Fatalf("got type %d sid %d ts %d csid %d len %d", m.Type, m.StreamID, m.Timestamp, m.CSID, len(m.Payload))
				}
			}
			if _, err := r.ReadMessage(); err != io.EOF {
				t.Fatalf("after last message: %v", err)
			}
		})
	}
}

// TestCompressedHeaders reads type 1, 2 and 3 headers as the spec's example
// (RTMP spec §5.3.2.1) lays them out, interleaved across chunk streams.
func TestCompressedHeaders(t *testing.T) {
	var b []byte
	// fmt 0 on csid 3: ts 1000, len 2, type 8, stream 1.
	b = append(b, 0x03, 0x00, 0x03, 0xe8, 0, 0, 2, 8, 1, 0, 0, 0, 'a', 'b')
	// fmt 2 on csid 3: delta 33.
	b = append(b, 0x83, 0, 0, 33, 'c', 'd')
	// fmt 0 on csid 4 with a 3-byte message in two chunks of 128? use fmt 3 later.
	b = append(b, 0x04, 0, 0, 5, 0, 0, 1, 9, 1, 0, 0, 0, 'x')
	// fmt 3 on csid 3: new message, same delta.
	b = append(b, 0xc3, 'e', 'f')
	// fmt 1 on csid 3: delta 10, len 1, type 9.
	b = append(b, 0x43, 0, 0, 10, 0, 0, 1, 9, 'g')
	r := NewChunkReader(bytes.NewReader(b))
	want := []struct {
		ts      uint32
		csid    uint32
		typ     uint8
		payload string
	}{{1000, 3, 8, "ab"}, {1033, 3, 8, "cd"}, {5, 4, 9, "x"}, {1066, 3, 8, "ef"}, {1076, 3, 9, "g"}}
	for i, w := range want {
		m, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Timestamp != w.ts || m.CSID != w.csid || m.Type != w.typ || string(m.Payload) != w.payload {
			t.Errorf("message %d: ts %d csid %d type %d %q, want %+v", i, m.Timestamp, m.CSID, m.Type, m.Payload, w)
		}
	}
}

func TestChunkLimits(t *testing.T) {
	setChunk := func(v uint32) []byte {
		return AppendMessage(nil, CSIDControl, TypeSetChunkSize, 0, 0, AppendUint32(nil, v), DefaultChunkSize)
	}
	header := func(csid uint32, length uint32) []byte {
		return []byte{byte(csid), 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), 9, 1, 0, 0, 0}
	}
	many := []byte{}
	for i := uint32(3); i < 3+MaxChunkStreams+1; i++ {
		many = append(many, AppendMessage(nil, 64+i, TypeVideo, 1, 0, []byte{1}, 128)...)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"chunk size 0", setChunk(0), ErrChunkSize},
		{"chunk size above 16 MiB", setChunk(MaxChunkSize + 1), ErrChunkSize},
		{"chunk size 2^31-1", setChunk(0x7fffffff), ErrChunkSize},
		{"chunk size empty payload", []byte{2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, ErrChunkSize},
		{"message above limit", header(6, DefaultMaxMessageSize+1), ErrMessageSize},
		{"continuation without header", []byte{0xc6, 1}, ErrMissingHeader},
		{"too many chunk streams", many, ErrChunkStreams},
		{"announced but never sent", header(6, 0xffff), io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewChunkReader(bytes.NewReader(tc.in))
			var err error
			for err == nil {
				_, err = r.ReadMessage()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAckWrapsPast4GiB(t *testing.T) {
	a := AckState{Window: 2500000}
	total := uint32(0xffffffff - 1000000) // 1 MB before the 32-bit counter wraps
	a.last = total
	sent := 0
	for i := 0; i < 10; i++ {
		total += 1000000 // wraps on the second step
		if a.Due(total) {
			sent++
		}
	}
	// Received in 1 MB steps, a 2.5 MB window acknowledges every third step.
	if sent != 3 {
		t.Fatalf("sent %d acknowledgements over 10 MB across the wrap, want 3", sent)
	}
}

func TestHandshake(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	errc := make(chan error, 1)
	go func() { errc <- ServerHandshake(s) }()
	if err := ClientHandshake(c); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A handshake read through a ChunkReader leaves the first message that came
// with C2 buffered for ReadMessage, and does not count as received bytes.
func TestReadHandshakeKeepsFirstMessage(t *testing.T) {
	in := make([]byte, 1+2*handshakeSize)
	in[0] = version
	msg := AppendMessage(nil, 3, TypeCommandAMF0, 0, 0, []byte("connect"), DefaultChunkSize)
	in = append(in, msg...)
	var out bytes.Buffer
	r := NewChunkReader(bytes.NewReader(in))
	err := r.ReadHandshake(func(hr io.Reader) error {
		return ServerHandshake(struct {
			io.Reader
			io.Writer
		}{hr, &out})
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.Len() != 1+2*handshakeSize {
		t.Errorf("wrote %d handshake bytes, want %d", out.Len(), 1+2*handshakeSize)
	}
	if r.BytesRead() > uint32(len(msg)) {
		t.Errorf("counted %d bytes received after the handshake, want at most the %d of the message", r.BytesRead(), len(msg))
	}
	m, err := r.ReadMessage()
	if err != nil || string(m.Payload) != "connect" {
		t.Fatalf("first message: %v, %v", m, err)
	}
	if r.BytesRead() != uint32(len(msg)) {
		t.Errorf("counted %d bytes received, want %d", r.BytesRead(), len(msg))
	}
}

// Handshakes one after another (reusing buffers) each answer with S1's
// time and zero fields zero, fresh random bytes, and S2 echoing their own C1.
func TestHandshakesReuseNothing(t *testing.T) {
	var prevRandom []byte
	for i := range 3 {
		in := make([]byte, 1+2*handshakeSize)
		in[0] = version
		for j := 1; j < len(in); j++ {
			in[j] = byte(i*7 + j)
		}
		var out bytes.Buffer
		if err := ServerHandshake(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(in), &out}); err != nil {
			t.Fatal(err)
		}
		b := out.Bytes()
		s1, s2 := b[1:1+handshakeSize], b[1+handshakeSize:]
		if !bytes.Equal(s1[:8], make([]byte, 8)) {
			t.Errorf("handshake %d: S1 time and zero fields % x, want zeros", i, s1[:8])
		}
		if !bytes.Equal(s2, in[1:1+handshakeSize]) {
			t.Errorf("handshake %d: S2 does not echo this client's C1", i)
		}
		if bytes.Equal(s1[8:], prevRandom) {
			t.Errorf("handshake %d: S1's random bytes repeat the last handshake's", i)
		}
		prevRandom = bytes.Clone(s1[8:])
	}
}

func TestHandshakeRejectsOtherVersions(t *testing.T) {
	in := append([]byte("GET / HTTP/1.1\r\n"), make([]byte, 1536)...)
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(in), io.Discard}
	if err := ServerHandshake(rw); !errors.Is(err, ErrVersion) {
		t.Fatalf("got %v, want ErrVersion", err)
	}
}

func FuzzChunkReader(f *testing.F) {
	f.Add(AppendMessage(nil, 3, TypeCommandAMF0, 0, 0, []byte("hello"), 128))
	f.Add(AppendMessage(nil, 6, TypeVideo, 1, 0x1000000, make([]byte, 300), 128))
	f.Add(append(AppendMessage(nil, 2, TypeSetChunkSize, 0, 0, AppendUint32(nil, 4096), 128), AppendMessage(nil, 6, TypeVideo, 1, 5, make([]byte, 5000), 4096)...))
	f.Add([]byte{0x03, 0x00, 0x03, 0xe8, 0, 0, 2, 8, 1, 0, 0, 0, 'a', 'b', 0x83, 0, 0, 33, 'c', 'd', 0xc3, 'e', 'f'})
	f.Add([]byte{0x02, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 0, 0, 0, 6})
	for _, s := range chunkSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The same bytes read whole, a byte at a time through the smallest
		// buffer, and skimmed must give the same messages and error.
		const limit = 1 << 16
		whole := NewChunkReader(bytes.NewReader(b))
		bytewise := NewChunkReaderSize(iotest.OneByteReader(bytes.NewReader(b)), 16)
		skim := NewChunkReader(bytes.NewReader(b))
		skim.Skim = true
		for _, r := range []*ChunkReader{whole, bytewise, skim} {
			r.MaxMessageSize = limit
		}
		for i := 0; i < 1000; i++ {
			m, err := whole.ReadMessage()
			m1, err1 := bytewise.ReadMessage()
			ms, errs := skim.ReadMessage()
			if fmt.Sprint(err) != fmt.Sprint(err1) || fmt.Sprint(err) != fmt.Sprint(errs) {
				t.Fatalf("message %d: whole: %v; byte by byte: %v; skimmed: %v", i, err, err1, errs)
			}
			if err != nil {
				return
			}
			if uint32(len(m.Payload)) != m.Length || m.Length > limit {
				t.Fatalf("message of %d bytes, length %d, limit %d", len(m.Payload), m.Length, limit)
			}
			if m.Type != m1.Type || m.Timestamp != m1.Timestamp || m.CSID != m1.CSID || m.StreamID != m1.StreamID || !bytes.Equal(m.Payload, m1.Payload) {
				t.Fatalf("message %d: whole %+v, byte by byte %+v", i, m, m1)
			}
			kept := m.Payload
			if m.Type == TypeAudio || m.Type == TypeVideo {
				kept = kept[:min(len(kept), SkimPrefix)]
			}
			if m.Type != ms.Type || m.Timestamp != ms.Timestamp || m.Length != ms.Length || !bytes.Equal(kept, ms.Payload) {
				t.Fatalf("message %d: whole %+v, skimmed %+v", i, m, ms)
			}
			for _, r := range []*ChunkReader{whole, bytewise, skim} {
				if r.pending < 0 || r.pending > 2*limit {
					t.Fatalf("%d bytes held in incomplete messages", r.pending)
				}
			}
		}
	})
}

func TestSkim(t *testing.T) {
	payload := make([]byte, 10000)
	for i := range payload {
		payload[i] = byte(i)
	}
	var b []byte
	b = AppendMessage(b, 6, TypeVideo, 1, 40, payload, 128)
	b = AppendMessage(b, 4, TypeAudio, 1, 41, payload[:5], 128)
	b = AppendMessage(b, 3, TypeCommandAMF0, 0, 0, payload[:300], 128)
	r := NewChunkReader(bytes.NewReader(b))
	r.Skim = true
	for _, want := range []struct {
		typ    uint8
		ts     uint32
		length uint32
		kept   int
	}{{TypeVideo, 40, 10000, SkimPrefix}, {TypeAudio, 41, 5, 5}, {TypeCommandAMF0, 0, 300, 300}} {
		m, err := r.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != want.typ || m.Timestamp != want.ts || m.Length != want.length || len(m.Payload) != want.kept || !bytes.Equal(m.Payload, payload[:want.kept]) {
			t.Fatalf("got type %d ts %d length %d kept %d, want %+v", m.Type, m.Timestamp, m.Length, len(m.Payload), want)
		}
	}
}
