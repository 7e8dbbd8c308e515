package rtmp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Errors for peers that break the chunk stream's limits.
var (
	ErrChunkSize     = errors.New("chunk size out of range")
	ErrMessageSize   = errors.New("message too large")
	ErrChunkStreams  = errors.New("too many chunk streams")
	ErrPendingBytes  = errors.New("too many bytes in incomplete messages")
	ErrMissingHeader = errors.New("chunk continues a chunk stream with no header")
)

// chunkState is what a chunk stream remembers between chunks (RTMP spec §5.3.1.2).
type chunkState struct {
	timestamp uint32
	delta     uint32
	length    uint32
	typeID    uint8
	streamID  uint32
	extended  bool // the current header used an extended timestamp
	hasHeader bool
	buf       []byte // the message being assembled
	skimmed   uint32 // bytes of a skimmed message read so far
	prefix    [SkimPrefix]byte
}

// countingReader counts the bytes taken from the connection, modulo 2^32,
// for acknowledgements.
type countingReader struct {
	r io.Reader
	n uint32
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint32(n)
	return n, err
}

// ChunkReader reassembles messages from an incoming chunk stream. It applies
// Set Chunk Size and Abort itself and never allocates more than the bytes a
// peer has actually sent (plus a small first buffer), so a header announcing
// a huge message costs nothing until its body arrives.
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
	// Length gives the full size. Load generators use it.
	Skim    bool
	skimMsg Message
}

// SkimPrefix is how many leading payload bytes a skimmed message keeps:
// enough for the FLV video tag header and a small first NAL unit.
const SkimPrefix = 64

// NewChunkReader reads chunks from r through a 2 KiB buffer: chunk headers
// go through it and chunk bodies as large as it bypass it, and it keeps a
// server's thousands of mostly silent players cheap.
func NewChunkReader(r io.Reader) *ChunkReader { return NewChunkReaderSize(r, 2<<10) }

// NewChunkReaderSize reads chunks from r through a buffer of size bytes; a
// client receiving media wants a large one.
func NewChunkReaderSize(r io.Reader, size int) *ChunkReader {
	c := &ChunkReader{size: DefaultChunkSize, streams: make(map[uint32]*chunkState), MaxMessageSize: DefaultMaxMessageSize}
	c.cr.r = r
	c.br = bufio.NewReaderSize(&c.cr, size)
	return c
}

// BytesRead returns the bytes received so far modulo 2^32.
func (c *ChunkReader) BytesRead() uint32 { return c.cr.n }

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
				return nil, fmt.Errorf("rtmp: set chunk size: %d-byte payload: %w", len(m.Payload), ErrChunkSize)
			}
			size := binary.BigEndian.Uint32(m.Payload) & 0x7fffffff
			if size < 1 || size > MaxChunkSize {
				return nil, fmt.Errorf("rtmp: set chunk size %d: %w", size, ErrChunkSize)
			}
			c.size = size
		case TypeAbort:
			if len(m.Payload) >= 4 {
				if cs := c.streams[binary.BigEndian.Uint32(m.Payload)]; cs != nil {
					c.pending -= len(cs.buf)
					cs.buf = nil
				}
			}
		default:
			return m, nil
		}
	}
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
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return nil, unexpected(err)
		}
		csid = 64 + uint32(b[0]) + uint32(b[1])<<8
	}
	cs := c.streams[csid]
	if cs == nil {
		if len(c.streams) >= MaxChunkStreams {
			return nil, fmt.Errorf("rtmp: chunk stream %d: %w (max %d)", csid, ErrChunkStreams, MaxChunkStreams)
		}
		cs = &chunkState{}
		c.streams[csid] = cs
	}
	if format != 0 && !cs.hasHeader {
		return nil, fmt.Errorf("rtmp: chunk stream %d: format %d: %w", csid, format, ErrMissingHeader)
	}
	newMessage := len(cs.buf) == 0
	var hdr [11]byte
	switch format {
	case 0:
		if _, err := io.ReadFull(c.br, hdr[:11]); err != nil {
			return nil, unexpected(err)
		}
		cs.timestamp = uint24(hdr[0:])
		cs.length = uint24(hdr[3:])
		cs.typeID = hdr[6]
		cs.streamID = binary.LittleEndian.Uint32(hdr[7:])
		cs.delta = 0
		cs.extended = cs.timestamp == 0xffffff
		if cs.extended {
			if cs.timestamp, err = c.readUint32(); err != nil {
				return nil, err
			}
		}
		cs.hasHeader = true
	case 1, 2:
		n := 7
		if format == 2 {
			n = 3
		}
		if _, err := io.ReadFull(c.br, hdr[:n]); err != nil {
			return nil, unexpected(err)
		}
		cs.delta = uint24(hdr[0:])
		if format == 1 {
			cs.length = uint24(hdr[3:])
			cs.typeID = hdr[6]
		}
		cs.extended = cs.delta == 0xffffff
		if cs.extended {
			if cs.delta, err = c.readUint32(); err != nil {
				return nil, err
			}
		}
		if newMessage {
			cs.timestamp += cs.delta
		}
	case 3:
		// A type 3 chunk repeats the previous header; when that header used an
		// extended timestamp, the 4 bytes are repeated too (spec §5.3.1.3).
		if cs.extended {
			if _, err := c.readUint32(); err != nil {
				return nil, err
			}
		}
		if newMessage {
			cs.timestamp += cs.delta
		}
	}
	if format <= 1 && newMessage && cs.length > c.MaxMessageSize {
		return nil, fmt.Errorf("rtmp: chunk stream %d: message of %d bytes: %w (max %d)", csid, cs.length, ErrMessageSize, c.MaxMessageSize)
	}
	if cs.length > c.MaxMessageSize {
		return nil, fmt.Errorf("rtmp: chunk stream %d: message of %d bytes: %w", csid, cs.length, ErrMessageSize)
	}
	if c.Skim && (cs.typeID == TypeAudio || cs.typeID == TypeVideo) {
		return c.skimChunk(cs, csid)
	}
	remaining := cs.length - uint32(len(cs.buf))
	n := min(remaining, c.size)
	if cs.buf == nil {
		// Start small: the body may never come.
		cs.buf = make([]byte, 0, min(cs.length, 16<<10))
	}
	if c.pending+int(n) > 2*int(c.MaxMessageSize) {
		return nil, fmt.Errorf("rtmp: %w", ErrPendingBytes)
	}
	start := len(cs.buf)
	cs.buf = grow(cs.buf, int(n))
	if _, err := io.ReadFull(c.br, cs.buf[start:]); err != nil {
		return nil, unexpected(err)
	}
	if uint32(len(cs.buf)) < cs.length {
		c.pending += int(n)
		return nil, nil
	}
	c.pending -= start
	m := &Message{Type: cs.typeID, StreamID: cs.streamID, Timestamp: cs.timestamp, CSID: csid, Payload: cs.buf, Length: cs.length}
	cs.buf = nil
	return m, nil
}

// skimChunk reads one chunk of a skimmed media message, keeping only the
// message's first SkimPrefix bytes.
func (c *ChunkReader) skimChunk(cs *chunkState, csid uint32) (*Message, error) {
	n := min(cs.length-cs.skimmed, c.size)
	if keep := min(n, SkimPrefix-min(cs.skimmed, SkimPrefix)); keep > 0 {
		if _, err := io.ReadFull(c.br, cs.prefix[cs.skimmed:cs.skimmed+keep]); err != nil {
			return nil, unexpected(err)
		}
		cs.skimmed += keep
		n -= keep
	}
	if n > 0 {
		if _, err := c.br.Discard(int(n)); err != nil {
			return nil, unexpected(err)
		}
		cs.skimmed += n
	}
	if cs.skimmed < cs.length {
		return nil, nil
	}
	m := &c.skimMsg
	*m = Message{Type: cs.typeID, StreamID: cs.streamID, Timestamp: cs.timestamp, CSID: csid,
		Payload: cs.prefix[:min(cs.length, SkimPrefix)], Length: cs.length}
	cs.skimmed = 0
	return m, nil
}

// grow extends b by n bytes, at least doubling its capacity when it must
// reallocate so a large message costs O(log n) copies.
func grow(b []byte, n int) []byte {
	if len(b)+n <= cap(b) {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}

func (c *ChunkReader) readUint32() (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return 0, unexpected(err)
	}
	return binary.BigEndian.Uint32(b[:]), nil
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

// FlushWith sends buffered messages followed by more (messages already in
// wire form at this writer's chunk size) in one vectored write.
func (w *ChunkWriter) FlushWith(more [][]byte) error {
	bufs := make(net.Buffers, 0, 1+len(more))
	bufs = append(append(bufs, w.buf), more...)
	_, err := bufs.WriteTo(w.w)
	w.buf = w.buf[:0]
	return err
}

// Release drops the buffer's memory; the writer stays usable.
func (w *ChunkWriter) Release() { w.buf = nil }
