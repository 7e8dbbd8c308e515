package rtmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/meshcast/meshcast/internal/protocol/amf0"
)

// seed is a named fuzz input; the committed corpus under testdata/fuzz
// holds the same inputs in files of these names.
type seed struct {
	name string
	b    []byte
}

// controlSeed is a named input of FuzzParseControl.
type controlSeed struct {
	name   string
	typeID uint8
	p      []byte
}

func mustCommand(name string, tx float64, obj any, args ...any) []byte {
	b, err := AppendCommand(nil, name, tx, obj, args...)
	if err != nil {
		panic(err)
	}
	return b
}

// chunkSeeds are chunk streams: valid, hostile and at the edges of the
// chunk size, header and timestamp rules.
func chunkSeeds() []seed {
	p := func(s string, n int) []byte { return bytes.Repeat([]byte(s), n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	var manyStreams []byte
	for i := range MaxChunkStreams + 1 {
		manyStreams = append(manyStreams, type0(uint32(3+i), 0, 0xffffff, TypeVideo, 1)...)
		manyStreams = append(manyStreams, p("v", 128)...)
	}
	big := make([]byte, 3000)
	for i := range big {
		big[i] = byte(i)
	}
	return []seed{
		{"set_chunk_size_0", setChunkSize(0)},
		{"set_chunk_size_2p31m1", setChunkSize(0x7fffffff)},
		{"set_chunk_size_2p32m1", setChunkSize(0xffffffff)},
		{"set_chunk_size_top_bit", setChunkSize(0x80001000)},
		{"set_chunk_size_short", AppendMessage(nil, CSIDControl, TypeSetChunkSize, 0, 0, []byte{0, 16}, 128)},
		{"chunk_size_1", cat(setChunkSize(1), AppendMessage(nil, 6, TypeVideo, 1, 40, big, 1))},
		{"chunk_size_1_interleaved", cat(setChunkSize(1), interleave(1, big[:700], big[:300]))},
		{"chunk_size_max", cat(setChunkSize(MaxChunkSize), AppendMessage(nil, 6, TypeVideo, 1, 40, big, MaxChunkSize))},
		{"header_16MiB_no_body", cat(setChunkSize(MaxChunkSize), type0(6, 0, 0xffffff, TypeVideo, 1))},
		{"headers_16MiB_every_stream", manyStreams},
		{"type1_no_header", delta(1, 5, 10, 4, TypeVideo)},
		{"type2_no_header", delta(2, 5, 10, 0, 0)},
		{"type3_no_header", type3(5)},
		{"ts_0xfffffe", cat(type0(4, 0xfffffe, 2, TypeAudio, 1), p("a", 2))},
		{"ts_0xffffff", cat(type0(4, 0xffffff, 2, TypeAudio, 1), p("a", 2))},
		{"ts_0x1000000_repeated", cat(type0(4, 0x1000000, 300, TypeVideo, 1), p("a", 128), type3(4, 0x1000000), p("b", 128), type3(4, 0x1000000), p("c", 44))},
		{"ts_0x1000000_not_repeated", cat(type0(4, 0x1000000, 300, TypeVideo, 1), p("a", 128), type3(4), p("b", 128), type3(4), p("c", 44))},
		{"delta_wrap", cat(type0(4, 0xffffff00, 1, TypeAudio, 1), p("a", 1), delta(2, 4, 0x200, 0, 0), p("b", 1), type3(4), p("c", 1))},
		{"extended_delta_repeated", cat(type0(4, 1000, 1, TypeAudio, 1), p("a", 1), delta(1, 4, 0x1000000, 200, TypeVideo), p("b", 128), type3(4, 0x1000000), p("c", 72), type3(4, 0x1000000), p("d", 128), type3(4, 0x1000000), p("e", 72))},
		{"type3_after_type0", cat(type0(4, 40, 1, TypeAudio, 1), p("a", 1), type3(4), p("b", 1))},
		{"mid_message_type0", cat(type0(4, 10, 200, TypeVideo, 1), p("a", 128), type0(4, 20, 3, TypeVideo, 1), p("b", 3))},
		{"abort_mid_message", cat(type0(4, 10, 200, TypeVideo, 1), p("a", 128), AppendMessage(nil, CSIDControl, TypeAbort, 0, 0, AppendUint32(nil, 4), 128), type0(4, 20, 3, TypeVideo, 1), p("b", 3))},
		{"three_byte_csid", AppendMessage(nil, 10064, TypeCommandAMF0, 0, 0, commandSeeds()[0].b, 128)},
	}
}

// commandSeeds are command payloads as encoders send them, and hostile ones.
func commandSeeds() []seed {
	connect := mustCommand("connect", 1, amf0.Object{
		{Key: "app", Value: "live"}, {Key: "type", Value: "nonprivate"},
		{Key: "flashVer", Value: "FMLE/3.0 (compatible; FMSc/1.0)"}, {Key: "swfUrl", Value: "rtmp://localhost/live"},
		{Key: "tcUrl", Value: "rtmp://localhost/live"},
	})
	deep := bytes.Repeat([]byte("\x03\x00\x01k"), 100)
	return []seed{
		{"connect_obs", connect},
		{"connect_ffmpeg", mustCommand("connect", 1, amf0.Object{
			{Key: "app", Value: "live"}, {Key: "flashVer", Value: "FMLE/3.0 (compatible; Lavf61.7.100)"},
			{Key: "tcUrl", Value: "rtmp://127.0.0.1:1935/live"}, {Key: "fpad", Value: false},
			{Key: "capabilities", Value: 15.0}, {Key: "audioCodecs", Value: 4071.0},
			{Key: "videoCodecs", Value: 252.0}, {Key: "videoFunction", Value: 1.0},
		})},
		{"release_stream", mustCommand("releaseStream", 2, nil, "stream")},
		{"fc_publish", mustCommand("FCPublish", 3, nil, "stream")},
		{"create_stream", mustCommand("createStream", 4, nil)},
		{"publish", mustCommand("publish", 5, nil, "stream", "live")},
		{"play", mustCommand("play", 0, nil, "stream", -2000.0)},
		{"result", mustCommand("_result", 4, nil, 1.0)},
		{"on_status", mustCommand("onStatus", 0, nil, Status("status", "NetStream.Publish.Start", "go"))},
		{"name_and_tx_only", []byte("\x02\x00\x0cdeleteStream\x00\x40\x18\x00\x00\x00\x00\x00\x00")},
		{"name_only", []byte("\x02\x00\x07connect")},
		{"number_first", []byte("\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x02\x00\x01x")},
		{"tx_not_number", []byte("\x02\x00\x07connect\x02\x00\x01x")},
		{"long_string_4GiB", append(connect[:25:25], "\x0c\xff\xff\xff\xffabc"...)},
		{"strict_array_2p32m1", append(mustCommand("play", 0, nil), "\x0a\xff\xff\xff\xff\x05\x05"...)},
		{"ecma_array_2p32m1", append(mustCommand("play", 0, nil), "\x08\xff\xff\xff\xff\x00\x01a\x05\x00\x00\x09"...)},
		{"nested_100", append(mustCommand("connect", 1, nil)[:19:19], deep...)},
		{"truncated_connect", connect[:len(connect)-5]},
		{"empty", []byte{}},
	}
}

// FuzzParseCommand: any payload parses or fails with an error; what parses
// re-encodes to bytes that parse to the same command.
func FuzzParseCommand(f *testing.F) {
	for _, s := range commandSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := ParseCommand(payload)
		if err != nil {
			if c != nil {
				t.Fatalf("command %+v returned with error %v", c, err)
			}
			return
		}
		for i := -1; i <= len(c.Args); i++ {
			_ = c.Arg(i)
		}
		enc, err := AppendCommand(nil, c.Name, c.TxID, c.Object, c.Args...)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", c, err)
		}
		c2, err := ParseCommand(enc)
		if err != nil {
			t.Fatalf("re-parse %q: %v", enc, err)
		}
		enc2, err := AppendCommand(nil, c2.Name, c2.TxID, c2.Object, c2.Args...)
		if err != nil || !bytes.Equal(enc, enc2) || c2.Name != c.Name || len(c2.Args) != len(c.Args) {
			t.Fatalf("round trip: %+v != %+v (%v)", c2, c, err)
		}
	})
}

// controlSeeds are protocol control and user control payloads.
func controlSeeds() []controlSeed {
	return []controlSeed{
		{"set_chunk_size_4096", TypeSetChunkSize, AppendUint32(nil, 4096)},
		{"set_chunk_size_0", TypeSetChunkSize, AppendUint32(nil, 0)},
		{"set_chunk_size_2p32m1", TypeSetChunkSize, AppendUint32(nil, 0xffffffff)},
		{"set_chunk_size_short", TypeSetChunkSize, []byte{0, 16}},
		{"abort", TypeAbort, AppendUint32(nil, 6)},
		{"ack", TypeAck, AppendUint32(nil, 0xfffffff0)},
		{"window_ack_size", TypeWindowAckSize, AppendUint32(nil, 2500000)},
		{"set_peer_bandwidth", TypeSetPeerBandwidth, AppendSetPeerBandwidth(nil, 2500000, 2)},
		{"set_peer_bandwidth_bad_limit", TypeSetPeerBandwidth, AppendSetPeerBandwidth(nil, 2500000, 7)},
		{"set_peer_bandwidth_short", TypeSetPeerBandwidth, AppendUint32(nil, 2500000)},
		{"stream_begin", TypeUserControl, AppendUserControl(nil, EventStreamBegin, 1)},
		{"ping_request", TypeUserControl, AppendUserControl(nil, EventPingRequest, 123456)},
		{"ping_request_short", TypeUserControl, []byte{0, 6, 1}},
		{"set_buffer_length", TypeUserControl, binary.BigEndian.AppendUint32(AppendUserControl(nil, EventSetBufferLen, 1), 3000)},
		{"set_buffer_length_short", TypeUserControl, AppendUserControl(nil, EventSetBufferLen, 1)},
		{"swf_verify_request", TypeUserControl, []byte{0, 26}},
		{"user_control_empty", TypeUserControl, []byte{}},
		{"not_control", TypeVideo, []byte{0x17, 1}},
	}
}

// FuzzParseControl: control payloads parse to fields that re-encode to
// the bytes they came from, or fail with ErrControl.
func FuzzParseControl(f *testing.F) {
	for _, s := range controlSeeds() {
		f.Add(s.typeID, s.p)
	}
	f.Fuzz(func(t *testing.T, typeID uint8, p []byte) {
		if typeID == TypeUserControl {
			u, err := ParseUserControl(p)
			if err != nil {
				if !errors.Is(err, ErrControl) || u != (UserControl{}) {
					t.Fatalf("%+v, %v", u, err)
				}
				return
			}
			switch u.Event {
			case EventStreamBegin, EventStreamEOF, EventStreamDry, EventRecorded, EventPingRequest, EventPingResponse:
				if enc := AppendUserControl(nil, u.Event, u.Arg); !bytes.Equal(enc, p[:6]) {
					t.Fatalf("%+v re-encodes as %x, from %x", u, enc, p)
				}
			case EventSetBufferLen:
				if enc := binary.BigEndian.AppendUint32(AppendUserControl(nil, u.Event, u.Arg), u.BufferLength); !bytes.Equal(enc, p[:10]) {
					t.Fatalf("%+v re-encodes as %x, from %x", u, enc, p)
				}
			default:
				if u.Arg != 0 || u.BufferLength != 0 || u.Event != binary.BigEndian.Uint16(p) {
					t.Fatalf("unknown event %+v from %x", u, p)
				}
			}
			return
		}
		c, err := ParseControl(typeID, p)
		if err != nil {
			if !errors.Is(err, ErrControl) || c != (Control{}) {
				t.Fatalf("%+v, %v", c, err)
			}
			return
		}
		enc := AppendUint32(nil, c.Value)
		if c.Type == TypeSetPeerBandwidth {
			enc = AppendSetPeerBandwidth(nil, c.Value, c.LimitType)
		}
		if c.Type != typeID || !bytes.Equal(enc, p[:len(enc)]) {
			t.Fatalf("%+v re-encodes as %x, from type %d %x", c, enc, typeID, p)
		}
	})
}

// rw joins a reader of the peer's bytes and a writer of ours.
type rw struct {
	io.Reader
	io.Writer
}

// clientHello is a well-formed C0+C1+C2: version 3, zero time and zero
// field, then a pattern.
func clientHello() []byte {
	b := make([]byte, 1+2*handshakeSize)
	b[0] = version
	for i := 9; i < len(b); i++ {
		b[i] = byte(i * 31)
	}
	return b
}

// handshakeSeeds are client byte streams: a handshake, alone or followed by
// a publisher's first messages, and refusals.
func handshakeSeeds() []seed {
	hello := clientHello()
	session := bytes.Clone(hello)
	session = append(session, setChunkSize(4096)...)
	session = append(session, AppendMessage(nil, CSIDCommand, TypeCommandAMF0, 0, 0, commandSeeds()[0].b, 4096)...)
	session = append(session, AppendMessage(nil, CSIDControl, TypeWindowAckSize, 0, 0, AppendUint32(nil, 2500000), 4096)...)
	session = append(session, AppendMessage(nil, CSIDControl, TypeUserControl, 0, 0, AppendUserControl(nil, EventPingResponse, 7), 4096)...)
	session = append(session, AppendMessage(nil, CSIDCommand, TypeCommandAMF0, 0, 0, mustCommand("createStream", 2, nil), 4096)...)
	session = append(session, AppendMessage(nil, CSIDCommand, TypeCommandAMF3, 1, 0, append([]byte{0}, mustCommand("publish", 0, nil, "s", "live")...), 4096)...)
	session = append(session, AppendMessage(nil, CSIDVideo, TypeVideo, 1, 0x1000000, make([]byte, 5000), 4096)...)
	with := func(b0 byte) []byte {
		b := bytes.Clone(hello)
		b[0] = b0
		return b
	}
	return []seed{
		{"simple", hello},
		{"session", session},
		{"rtmpe", with(6)},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"tls", with(0x16)},
		{"proxy_v1", []byte("PROXY TCP4 203.0.113.7 127.0.0.1 56324 1935\r\n")},
		{"short_c1", hello[:700]},
		{"short_c2", hello[:1+handshakeSize+100]},
		{"c0_only", []byte{3}},
		{"empty", []byte{}},
		{"hostile_after_handshake", append(bytes.Clone(hello), append(setChunkSize(0xffffffff), 0xc9, 1, 2)...)},
	}
}

// FuzzServerHandshake feeds a client's byte stream to ServerHandshake, in
// one piece and a byte at a time, then reads what follows as a session
// does: messages, commands and control messages.
func FuzzServerHandshake(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out, out1 bytes.Buffer
		rd := bytes.NewReader(in)
		err := ServerHandshake(rw{rd, &out})
		err1 := ServerHandshake(rw{iotest.OneByteReader(bytes.NewReader(in)), &out1})
		if fmt.Sprint(err) != fmt.Sprint(err1) {
			t.Fatalf("whole: %v; byte by byte: %v", err, err1)
		}
		complete := len(in) >= 1+2*handshakeSize
		switch {
		case len(in) > 0 && in[0] != version:
			if !errors.Is(err, ErrVersion) || out.Len() != 0 {
				t.Fatalf("C0 %#x: %v, wrote %d bytes", in[0], err, out.Len())
			}
			return
		case !complete:
			if err == nil {
				t.Fatalf("handshake of %d bytes succeeded", len(in))
			}
			return
		case err != nil:
			t.Fatalf("handshake failed: %v", err)
		}
		s := out.Bytes()
		if len(s) != 1+2*handshakeSize || s[0] != version || !bytes.Equal(s[1+handshakeSize:], in[1:1+handshakeSize]) {
			t.Fatalf("S0+S1+S2 of %d bytes does not echo C1", len(s))
		}
		// The session: what the server would decode.
		r := NewChunkReader(rd)
		r.MaxMessageSize = 1 << 16
		for range 200 {
			m, err := r.ReadMessage()
			if err != nil {
				return
			}
			switch m.Type {
			case TypeCommandAMF0:
				ParseCommand(m.Payload)
			case TypeCommandAMF3:
				if len(m.Payload) > 0 {
					ParseCommand(m.Payload[1:])
				}
			case TypeDataAMF0:
				amf0.DecodeAll(m.Payload)
			case TypeUserControl:
				ParseUserControl(m.Payload)
			case TypeAck, TypeWindowAckSize, TypeSetPeerBandwidth:
				ParseControl(m.Type, m.Payload)
			}
		}
	})
}

// serverHelloSeeds are server byte streams for the client handshake.
func serverHelloSeeds() []seed {
	hello := clientHello() // the same shape: S0+S1+S2
	bad := bytes.Clone(hello)
	bad[0] = 6
	return []seed{
		{"simple", hello},
		{"rtmpe", bad},
		{"short", hello[:2000]},
		{"empty", []byte{}},
	}
}

// FuzzClientHandshake feeds a server's byte stream to ClientHandshake.
func FuzzClientHandshake(f *testing.F) {
	for _, s := range serverHelloSeeds() {
		f.Add(s.b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		err := ClientHandshake(rw{iotest.HalfReader(bytes.NewReader(in)), &out})
		complete := len(in) >= 1+2*handshakeSize
		if ok := complete && in[0] == version; ok != (err == nil) {
			t.Fatalf("%d bytes starting %#x: %v", len(in), in[:min(1, len(in))], err)
		}
		if err != nil {
			if complete && !errors.Is(err, ErrVersion) {
				t.Fatalf("complete handshake with S0 %#x: %v", in[0], err)
			}
			return
		}
		c := out.Bytes()
		if len(c) != 1+2*handshakeSize || c[0] != version {
			t.Fatalf("C0+C1+C2 of %d bytes", len(c))
		}
		c2 := c[1+handshakeSize:]
		s1 := in[1 : 1+handshakeSize]
		if !bytes.Equal(c2[:4], s1[:4]) || !bytes.Equal(c2[8:], s1[8:]) || binary.BigEndian.Uint32(c2[4:]) != 0 {
			t.Fatal("C2 does not echo S1")
		}
	})
}
