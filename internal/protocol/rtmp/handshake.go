package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
)

// handshakeSize is the size of C1/C2/S1/S2 (RTMP spec §5.2).
const handshakeSize = 1536

// version is the only RTMP version meshcast speaks (plain, unencrypted).
const version = 3

// ErrVersion is returned when a peer opens with a version byte other than 3.
var ErrVersion = errors.New("unsupported RTMP version")

// handshakeBufSize holds C0+C1 and S0+S1+S2.
const handshakeBufSize = 1 + handshakeSize + 1 + 2*handshakeSize

// handshakeBufs are reusable handshake buffers.
var handshakeBufs = sync.Pool{New: func() any { return new([handshakeBufSize]byte) }}

// ServerHandshake performs the server side of the simple handshake
// (RTMP spec §5.2): read C0+C1, send S0+S1+S2 (S2 echoes C1), read C2.
// Clients that expect the digest ("complex") handshake still accept this, as
// ffmpeg, OBS and GStreamer do.
//
// Its buffers live on the heap only for the handshake: kept on the stack they
// would grow every connection's goroutine stack for good. They are reused,
// so a burst of joins neither grows the heap by them nor makes garbage.
func ServerHandshake(rw io.ReadWriter) error {
	bp := handshakeBufs.Get().(*[handshakeBufSize]byte)
	defer handshakeBufs.Put(bp)
	buf := bp[:]
	c0c1, out := buf[:1+handshakeSize], buf[1+handshakeSize:]
	// C0 alone first, so a peer speaking something else is turned away at
	// once rather than when 1536 more bytes have come or the read times out.
	if _, err := io.ReadFull(rw, c0c1[:1]); err != nil {
		return fmt.Errorf("rtmp: handshake: read C0: %w", err)
	}
	if c0c1[0] != version {
		return fmt.Errorf("rtmp: handshake: C0 0x%02x%s: %w (want 3)", c0c1[0], versionHint(c0c1[0]), ErrVersion)
	}
	if _, err := io.ReadFull(rw, c0c1[1:]); err != nil {
		return fmt.Errorf("rtmp: handshake: read C1: %w", unexpected(err))
	}
	out[0] = version
	s1 := out[1 : 1+handshakeSize]
	// S1: time (4), zero (4), random (1528).
	clear(s1[:8])
	fillRandom(s1[8:])
	s2 := out[1+handshakeSize:]
	copy(s2, c0c1[1:])
	if _, err := rw.Write(out); err != nil {
		return fmt.Errorf("rtmp: handshake: write S0+S1+S2: %w", err)
	}
	if _, err := io.ReadFull(rw, c0c1[1:]); err != nil { // C2, unchecked
		return fmt.Errorf("rtmp: handshake: read C2: %w", unexpected(err))
	}
	return nil
}

// versionHint names what a peer opening with version byte b probably
// speaks, for the log of a refused handshake.
func versionHint(b byte) string {
	switch {
	case b == 6 || b == 8 || b == 9:
		return " (encrypted RTMPE)"
	case b == 0x16:
		return " (a TLS handshake: RTMPS sent to a plain RTMP port)"
	case b == 'P':
		return ` ('P': text such as HTTP, or a PROXY protocol header)`
	case b == '\r':
		return " (a PROXY protocol v2 header)"
	case b >= 'A' && b <= 'Z':
		return fmt.Sprintf(" (%q: text such as HTTP)", rune(b))
	}
	return ""
}

// ClientHandshake performs the client side of the simple handshake: send
// C0+C1, read S0+S1+S2, send C2 echoing S1.
func ClientHandshake(rw io.ReadWriter) error {
	buf := make([]byte, 1+handshakeSize+1+2*handshakeSize)
	c0c1, s := buf[:1+handshakeSize], buf[1+handshakeSize:]
	c0c1[0] = version
	fillRandom(c0c1[9:])
	if _, err := rw.Write(c0c1); err != nil {
		return fmt.Errorf("rtmp: handshake: write C0+C1: %w", err)
	}
	if _, err := io.ReadFull(rw, s); err != nil {
		return fmt.Errorf("rtmp: handshake: read S0+S1+S2: %w", err)
	}
	if s[0] != version {
		return fmt.Errorf("rtmp: handshake: S0 0x%02x%s: %w (want 3)", s[0], versionHint(s[0]), ErrVersion)
	}
	c2 := s[1 : 1+handshakeSize] // echoes S1
	binary.BigEndian.PutUint32(c2[4:], 0)
	if _, err := rw.Write(c2); err != nil {
		return fmt.Errorf("rtmp: handshake: write C2: %w", err)
	}
	return nil
}

// fillRandom fills b with the random bytes a handshake packet carries.
// They only make the packet unique (RTMP spec §5.2.3), so the runtime's
// fast generator will do: a burst of joins need not wait on the kernel's.
func fillRandom(b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, rand.Uint64())
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
}
