package rtmp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Errors for peers that break the chunk stream's rules or limits. Returned
// errors wrap one of them and say what was wrong and, for a limit, its value.
var (
	ErrChunkSize     = errors.New("chunk size out of range")
	ErrMessageSize   = errors.New("message too large")
	ErrChunkStreams  = errors.New("too many chunk streams")
	ErrPendingBytes  = errors.New("too many bytes in incomplete messages")
	ErrMissingHeader = errors.New("chunk continues a chunk stream with no header")
)

// minBodyAlloc is the first allocation for a message body. Later ones at
// most double what has arrived, so a message costs memory in proportion to
// the bytes a peer has actually sent, whatever its header announced.
const minBodyAlloc = 1 << 10

// chunkState is what a chunk stream remembers between chunks (RTMP spec
// §5.3.1.2): the latest header's fields and the message being assembled.
type chunkState struct {
	timestamp uint32 // absolute timestamp of the latest message
	delta     uint32 // what a chunk starting a message without a timestamp adds
	length    uint32
	typeID    uint8
	streamID  uint32
	extended  bool   // the latest header had an extended timestamp field...
	extValue  uint32 // ...holding this, which type 3 chunks repeat
	hasHeader bool

	received uint32 // bytes of the current message read so far; 0 between messages
	skim     bool   // the current message is skimmed into prefix
	buf      []byte // the current message, unless skimmed
	prefix   [SkimPrefix]byte
}

// countingReader counts the bytes taken from the connection, for
// acknowledgements.
type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// ChunkReader reassembles messages from an incoming chunk stream. It applies
// Set Chunk Size and Abort itself and bounds what a peer can make it hold:
//
//   - at most MaxChunkStreams chunk streams per connection;
//   - messages of at most MaxMessageSize bytes;
//   - at most 2*MaxMessageSize bytes held in incomplete messages across all
//     chunk streams;
//   - memory for a message grows with the bytes that arrive (starting at 1
//     KiB, at most doubling), never with what its header announces, so a
//     header announcing a huge message costs nothing until its body comes.
type ChunkReader struct {
	cr      countingReader
	br      *bufio.Reader
	size    uint32 // incoming chunk size
	streams map[uint32]*chunkState
	pending int // bytes held in incomplete messages
	// MaxMessageSize caps one message; defaults to DefaultMaxMessageSize.
	MaxMessageSize uint32
	// Skim makes audio and video messages cost no allocation: their Payload
	// holds only the first SkimPrefix bytes, valid until the next read, and
	// Length gives the full size. Load generators use it. A change applies
	// from the next message on each chunk stream.
	Skim    bool
	skimMsg Message
	pooled  bool     // br came from smallReaders
	scratch [11]byte // chunk headers, kept here so they are not allocated per chunk
}

// SkimPrefix is how many leading payload bytes a skimmed message keeps:
// enough for the FLV video tag header and a small first NAL unit.
const SkimPrefix = 64

// NewChunkReader reads chunks from r through a 2 KiB buffer: chunk headers
// go through it and chunk bodies as large as it bypass it, and it keeps a
// server's thousands of mostly silent players cheap.
// Its buffer is reused after Release.
func NewChunkReader(r io.Reader) *ChunkReader {
	c := newChunkReader(r)
	c.br = smallReaders.Get().(*bufio.Reader)
	c.br.Reset(&c.cr)
	c.pooled = true
	return c
}

// smallReaders are NewChunkReader's reusable buffers.
var smallReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 2<<10) }}

// Release gives up the reader's buffer for reuse. The reader must not be
// used after.
func (c *ChunkReader) Release() {
	if c.pooled && c.br != nil {
		c.br.Reset(nil)
		smallReaders.Put(c.br)
	}
	c.br = nil
}

// NewChunkReaderSize reads chunks from r through a buffer of size bytes; a
// client receiving media wants a large one.
func NewChunkReaderSize(r io.Reader, size int) *ChunkReader {
	c := newChunkReader(r)
	c.br = bufio.NewReaderSize(&c.cr, size)
	return c
}

func newChunkReader(r io.Reader) *ChunkReader {
	c := &ChunkReader{size: DefaultChunkSize, streams: make(map[uint32]*chunkState), MaxMessageSize: DefaultMaxMessageSize}
	c.cr.r = r
	return c
}

// ReadHandshake runs handshake, the exchange that comes before the chunk
// stream, on this reader's buffered input: the bytes of the first messages,
// arriving with the handshake's last ones, stay buffered for ReadMessage
// instead of costing a read of their own. Handshake bytes do not count as
// received.
func (c *ChunkReader) ReadHandshake(handshake func(io.Reader) error) error {
	err := handshake(c.br)
	c.cr.n = uint64(c.br.Buffered())
	return err
}

// BytesRead returns the sequence number an Acknowledgement carries (RTMP
// spec §5.4.3): the bytes received so far modulo 2^32, that is the low 32
// bits of TotalBytesRead. Pass it to AckState.Due.
func (c *ChunkReader) BytesRead() uint32 { return uint32(c.cr.n) }

// TotalBytesRead returns the bytes received so far, without wrapping.
func (c *ChunkReader) TotalBytesRead() uint64 { return c.cr.n }

// ChunkSize returns the peer's current chunk size.
func (c *ChunkReader) ChunkSize() uint32 { return c.size }

// ReadMessage returns the next complete message other than Set Chunk Size
// and Abort, which it applies. The payload belongs to the caller.
func (c *ChunkReader) ReadMessage() (*Message, error) {
	for {
		m, err := c.readChunk()
		if err != nil {
			return nil, err
		}
		if m == nil {
			continue
		}
		switch m.Type {
		case TypeSetChunkSize:
			if len(m.Payload) < 4 {
				return nil, fmt.Errorf("rtmp: set chunk size: %d-byte payload, want 4: %w", len(m.Payload), ErrChunkSize)
			}
			// The top bit must be zero (§5.4.1); MaxChunkSize is below it.
			size := binary.BigEndian.Uint32(m.Payload)
			if size < 1 || size > MaxChunkSize {
				return nil, fmt.Errorf("rtmp: set chunk size %d: %w: must be 1 to %d", size, ErrChunkSize, MaxChunkSize)
			}
			c.size = size
		case TypeAbort:
			if len(m.Payload) >= 4 {
				if cs := c.streams[binary.BigEndian.Uint32(m.Payload)]; cs != nil {
					c.drop(cs)
				}
			}
		default:
			return m, nil
		}
	}
}

// drop discards the message a chunk stream is assembling.
func (c *ChunkReader) drop(cs *chunkState) {
	c.pending -= len(cs.buf)
	cs.buf = nil
	cs.received = 0
}

// readChunk reads one chunk and returns the message it completes, if any.
func (c *ChunkReader) readChunk() (*Message, error) {
	b0, err := c.br.ReadByte()
	if err != nil {
		return nil, err
	}
	format := b0 >> 6
	csid := uint32(b0 & 0x3f)
	switch csid {
	case 0:
		b, err := c.br.ReadByte()
		if err != nil {
			return nil, unexpected(err)
		}
		csid = 64 + uint32(b)
	case 1:
		b := c.scratch[:2]
		if _, err := io.ReadFull(c.br, b); err != nil {
			return nil, unexpected(err)
		}
		csid = 64 + uint32(b[0]) + uint32(b[1])<<8
	}
	cs := c.streams[csid]
	if format != 0 && (cs == nil || !cs.hasHeader) {
		return nil, fmt.Errorf("rtmp: chunk stream %d: type %d chunk before any type 0 chunk: %w", csid, format, ErrMissingHeader)
	}
	if cs == nil {
		if len(c.streams) >= MaxChunkStreams {
			return nil, fmt.Errorf("rtmp: chunk stream %d: %w (max %d)", csid, ErrChunkStreams, MaxChunkStreams)
		}
		cs = &chunkState{}
		c.streams[csid] = cs
	}
	if err := c.readHeader(cs, format); err != nil {
		return nil, err
	}
	if cs.length > c.MaxMessageSize {
		return nil, fmt.Errorf("rtmp: chunk stream %d: message of %d bytes: %w (max %d)", csid, cs.length, ErrMessageSize, c.MaxMessageSize)
	}
	if cs.received == 0 {
		cs.skim = c.Skim && (cs.typeID == TypeAudio || cs.typeID == TypeVideo)
	}
	n := min(cs.length-cs.received, c.size)
	if cs.skim {
		return c.skimChunk(cs, csid, n)
	}
	if limit := 2 * int(c.MaxMessageSize); c.pending+int(n) > limit {
		return nil, fmt.Errorf("rtmp: chunk stream %d: %w: %d held, %d more, max %d", csid, ErrPendingBytes, c.pending, n, limit)
	}
	start := len(cs.buf)
	if cs.buf, err = c.readBody(cs.buf, int(n), int(cs.length)); err != nil {
		return nil, err
	}
	cs.received += n
	if cs.received < cs.length {
		c.pending += int(n)
		return nil, nil
	}
	c.pending -= start
	payload := cs.buf
	if payload == nil {
		payload = []byte{}
	}
	m := &Message{Type: cs.typeID, StreamID: cs.streamID, Timestamp: cs.timestamp, CSID: csid, Payload: payload, Length: cs.length}
	cs.buf = nil
	cs.received = 0
	return m, nil
}

// readHeader reads the message header of a chunk of the given format (RTMP
// spec §5.3.1.2) and the extended timestamp field that may follow it
// (§5.3.1.3), and updates cs.
//
// A chunk of type 1, 2 or 3 that starts a message adds the chunk stream's
// delta to the previous message's timestamp, in 32-bit arithmetic that
// wraps; after a type 0 chunk the delta is that chunk's timestamp, as the
// spec's example of a type 3 chunk directly following a type 0 one says
// (§5.3.1.2.4), and as ffmpeg and GStreamer decode it.
//
// A type 0, 1 or 2 chunk arriving while a message is incomplete (which the
// spec does not allow) continues it when it announces the same length and
// type, as ffmpeg allows; otherwise the incomplete message is dropped and a
// new one starts.
func (c *ChunkReader) readHeader(cs *chunkState, format byte) error {
	hdr := &c.scratch
	switch format {
	case 0:
		if _, err := io.ReadFull(c.br, hdr[:11]); err != nil {
			return unexpected(err)
		}
		ts, length, typeID, streamID := uint24(hdr[0:]), uint24(hdr[3:]), hdr[6], binary.LittleEndian.Uint32(hdr[7:])
		ext := ts == 0xffffff
		if ext {
			var err error
			if ts, err = c.readUint32(); err != nil {
				return err
			}
		}
		if cs.received > 0 && (length != cs.length || typeID != cs.typeID || streamID != cs.streamID) {
			c.drop(cs)
		}
		cs.length, cs.typeID, cs.streamID = length, typeID, streamID
		cs.extended, cs.extValue = ext, ts
		if cs.received == 0 {
			cs.timestamp, cs.delta = ts, ts
		}
		cs.hasHeader = true
	case 1, 2:
		n := 7
		if format == 2 {
			n = 3
		}
		if _, err := io.ReadFull(c.br, hdr[:n]); err != nil {
			return unexpected(err)
		}
		delta, length, typeID := uint24(hdr[0:]), cs.length, cs.typeID
		if format == 1 {
			length, typeID = uint24(hdr[3:]), hdr[6]
		}
		ext := delta == 0xffffff
		if ext {
			var err error
			if delta, err = c.readUint32(); err != nil {
				return err
			}
		}
		if cs.received > 0 && (length != cs.length || typeID != cs.typeID) {
			c.drop(cs)
		}
		cs.length, cs.typeID = length, typeID
		cs.extended, cs.extValue = ext, delta
		cs.delta = delta
		if cs.received == 0 {
			cs.timestamp += delta
		}
	case 3:
		if cs.received == 0 {
			cs.timestamp += cs.delta
		}
		if cs.extended {
			return c.skipRepeatedExtended(cs)
		}
	}
	return nil
}

// skipRepeatedExtended consumes the extended timestamp field of a type 3
// chunk. The spec (§5.3.1.3 as Adobe later clarified it), Flash, ffmpeg,
// librtmp and GStreamer repeat the field in every type 3 chunk that follows
// a header with one, but some encoders leave it out. As GStreamer and SRS
// do, the field is taken to be present when the next four bytes hold the
// value the header's field held or the message's timestamp, and to be the
// start of the chunk's payload otherwise. For such encoders the check waits
// for four bytes, so a final chunk shorter than that is only read once more
// bytes follow it.
func (c *ChunkReader) skipRepeatedExtended(cs *chunkState) error {
	p, err := c.br.Peek(4)
	if len(p) < 4 {
		if err == io.EOF {
			return nil // absent: the payload read reports a truncated chunk
		}
		return err
	}
	if v := binary.BigEndian.Uint32(p); v == cs.extValue || v == cs.timestamp {
		_, err = c.br.Discard(4)
	}
	return err
}

// readBody appends n bytes from the connection to b, which holds the start
// of a message of total bytes. Memory grows only as bytes arrive: when b is
// full its capacity doubles (starting at minBodyAlloc, never beyond total),
// so allocation stays within twice what was received plus minBodyAlloc.
func (c *ChunkReader) readBody(b []byte, n, total int) ([]byte, error) {
	for n > 0 {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(total, max(2*cap(b), minBodyAlloc)))
			copy(nb, b)
			b = nb
		}
		k := min(n, cap(b)-len(b))
		if _, err := io.ReadFull(c.br, b[len(b):len(b)+k]); err != nil {
			return b, unexpected(err)
		}
		b = b[:len(b)+k]
		n -= k
	}
	return b, nil
}

// skimChunk reads n bytes of a skimmed media message, keeping only the
// message's first SkimPrefix bytes.
func (c *ChunkReader) skimChunk(cs *chunkState, csid, n uint32) (*Message, error) {
	if keep := min(n, SkimPrefix-min(cs.received, SkimPrefix)); keep > 0 {
		if _, err := io.ReadFull(c.br, cs.prefix[cs.received:cs.received+keep]); err != nil {
			return nil, unexpected(err)
		}
		cs.received += keep
		n -= keep
	}
	if n > 0 {
		if _, err := c.br.Discard(int(n)); err != nil {
			return nil, unexpected(err)
		}
		cs.received += n
	}
	if cs.received < cs.length {
		return nil, nil
	}
	m := &c.skimMsg
	*m = Message{Type: cs.typeID, StreamID: cs.streamID, Timestamp: cs.timestamp, CSID: csid,
		Payload: cs.prefix[:min(cs.length, SkimPrefix)], Length: cs.length}
	cs.received = 0
	return m, nil
}

func (c *ChunkReader) readUint32() (uint32, error) {
	b := c.scratch[:4]
	if _, err := io.ReadFull(c.br, b); err != nil {
		return 0, unexpected(err)
	}
	return binary.BigEndian.Uint32(b), nil
}

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

// unexpected turns a clean EOF inside a chunk into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// MessageSize returns the number of bytes AppendMessage writes for a
// payload of n bytes.
func MessageSize(csid uint32, ts uint32, n, chunkSize int) int {
	bh := basicHeaderSize(csid)
	size := bh + 11 + n
	chunks := 1
	if n > chunkSize {
		chunks = (n + chunkSize - 1) / chunkSize
	}
	size += (chunks - 1) * bh
	if ts >= 0xffffff {
		size += 4 * chunks
	}
	return size
}

func basicHeaderSize(csid uint32) int {
	switch {
	case csid < 64:
		return 1
	case csid < 320:
		return 2
	}
	return 3
}

func appendBasicHeader(dst []byte, format uint8, csid uint32) []byte {
	switch {
	case csid < 64:
		return append(dst, format<<6|uint8(csid))
	case csid < 320:
		return append(dst, format<<6, uint8(csid-64))
	}
	v := csid - 64
	return append(dst, format<<6|1, uint8(v), uint8(v>>8))
}

// AppendMessage appends payload as a message split into chunks of chunkSize:
// a type 0 chunk, then type 3 chunks. Every message carries a full header,
// so the bytes are the same for every receiver and can be shared.
func AppendMessage(dst []byte, csid uint32, typeID uint8, streamID, ts uint32, payload []byte, chunkSize int) []byte {
	dst = appendBasicHeader(dst, 0, csid)
	t := ts
	if ts >= 0xffffff {
		t = 0xffffff
	}
	n := len(payload)
	dst = append(dst, byte(t>>16), byte(t>>8), byte(t), byte(n>>16), byte(n>>8), byte(n), typeID)
	dst = binary.LittleEndian.AppendUint32(dst, streamID)
	if ts >= 0xffffff {
		dst = binary.BigEndian.AppendUint32(dst, ts)
	}
	for {
		k := min(len(payload), chunkSize)
		dst = append(dst, payload[:k]...)
		payload = payload[k:]
		if len(payload) == 0 {
			return dst
		}
		dst = appendBasicHeader(dst, 3, csid)
		if ts >= 0xffffff {
			dst = binary.BigEndian.AppendUint32(dst, ts)
		}
	}
}

// ChunkWriter writes messages with a fixed outgoing chunk size. Messages
// collect in a buffer until Flush; Release frees the buffer of a connection
// that will write through other means for a while.
type ChunkWriter struct {
	w    io.Writer
	size int
	buf  []byte
}

// NewChunkWriter writes chunks to w with the default chunk size of 128.
func NewChunkWriter(w io.Writer) *ChunkWriter {
	return &ChunkWriter{w: w, size: DefaultChunkSize}
}

// SetChunkSize sends Set Chunk Size and uses size from then on.
func (w *ChunkWriter) SetChunkSize(size int) error {
	if err := w.WriteMessage(CSIDControl, TypeSetChunkSize, 0, 0, AppendSetChunkSize(nil, uint32(size))); err != nil {
		return err
	}
	w.size = size
	return nil
}

// ChunkSize returns the outgoing chunk size.
func (w *ChunkWriter) ChunkSize() int { return w.size }

// WriteMessage buffers one message.
func (w *ChunkWriter) WriteMessage(csid uint32, typeID uint8, streamID, ts uint32, payload []byte) error {
	w.buf = AppendMessage(w.buf, csid, typeID, streamID, ts, payload, w.size)
	if len(w.buf) >= 64<<10 {
		return w.Flush()
	}
	return nil
}

// Flush sends buffered messages.
func (w *ChunkWriter) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// buffersWriter is a writer with its own vectored write, such as a
// connection from package rawio: net.Buffers writes only the net
// package's own connections in one system call.
type buffersWriter interface {
	WriteBuffers([][]byte) (int64, error)
}

// FlushWith sends buffered messages followed by more (messages already in
// wire form at this writer's chunk size) in one vectored write.
func (w *ChunkWriter) FlushWith(more [][]byte) error {
	bufs := make(net.Buffers, 0, 1+len(more))
	bufs = append(append(bufs, w.buf), more...)
	var err error
	if bw, ok := w.w.(buffersWriter); ok {
		_, err = bw.WriteBuffers(bufs)
	} else {
		_, err = bufs.WriteTo(w.w)
	}
	w.buf = w.buf[:0]
	return err
}

// Release drops the buffer's memory; the writer stays usable.
func (w *ChunkWriter) Release() { w.buf = nil }
