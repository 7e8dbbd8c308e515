package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/srtconn"
)

// SRT handshakes. gosrt's callers send their handshake once and never
// again, where libsrt's send it again every 250 ms until answered; and a
// gosrt listener (meshcast's among them) drops handshake packets when its
// backlog or its socket's queue is full, as a burst of callers or a busy
// server makes it. So a player makes few handshakes at once with the
// others, and makes a new one when its last goes unanswered.
const (
	// srtConnectTimeout bounds an SRT player's handshakes.
	srtConnectTimeout = 10 * time.Second
	// srtAttempt bounds one handshake, unless the URL sets conntimeo.
	srtAttempt = 2500 * time.Millisecond
)

// srtDials bounds the SRT handshakes under way at once.
var srtDials = make(chan struct{}, 32)

// playSRT reads an SRT stream, srt://HOST:PORT?streamid=read:APP/STREAM
// (with any other option of gosrt's URLs: latency, passphrase…), as an
// SRT caller. It looks at the MPEG-TS it gets only as far as the start of
// each video frame: its keyframe flag and frame number. Packets are
// counted from SRT's sequence numbers: those never delivered, even after
// retransmission, are lost.
func (p *player) playSRT(ctx context.Context, u *url.URL) error {
	cfg := gosrt.DefaultConfig()
	cfg.ConnectionTimeout = srtAttempt
	cfg.PeerIdleTimeout = idleTimeout
	if err := cfg.UnmarshalQuery(u.RawQuery); err != nil {
		return fmt.Errorf("play URL %q: %w", u, err)
	}
	if cfg.StreamId == "" {
		return fmt.Errorf("play URL %q: want srt://HOST:PORT?streamid=read:APP/STREAM", u)
	}
	conn, err := p.dialSRT(ctx, hostPort(u, "8890"), cfg)
	if err != nil {
		return fmt.Errorf("srt: %w", err)
	}
	defer srtconn.Close(conn)
	// gosrt's connections have no read deadlines: closing one ends a
	// pending read, and the connection closes itself when the server is
	// silent for PeerIdleTimeout.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	p.joined()
	ts := tsReader{videoPID: -1, local: conn.LocalAddr()}
	var (
		loss    lossCounter
		ext     int64 // the highest sequence number so far, unwrapped
		started bool
	)
	for {
		pkt, err := conn.ReadPacket()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("srt: the connection ended")
			}
			return fmt.Errorf("srt: %w", err)
		}
		now := time.Now()
		// Sequence numbers have 31 bits.
		v := int64(pkt.Header().PacketSequenceNumber.Val())
		seq := v
		if started {
			d := (v - ext) & (1<<31 - 1)
			if d >= 1<<30 {
				d -= 1 << 31
			}
			seq = ext + d
		}
		if !started || seq > ext {
			ext, started = seq, true
		}
		loss.add(p, seq, now)
		data := pkt.Data()
		p.bytes.Add(int64(len(data)))
		ts.feed(p, data, now)
		pkt.Decommission()
	}
}

// dialSRT connects to addr, making a new handshake while the last goes
// unanswered, for srtConnectTimeout at most. The play starts with the
// first.
func (p *player) dialSRT(ctx context.Context, addr string, cfg gosrt.Config) (gosrt.Conn, error) {
	deadline := time.Now().Add(srtConnectTimeout)
	for first := true; ; first = false {
		select {
		case srtDials <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if first {
			p.playStart = time.Now()
		}
		// gosrt.Dial takes no context: a handshake is bounded by its
		// timeout.
		conn, err := gosrt.Dial("srt", addr, cfg)
		<-srtDials
		if err == nil || ctx.Err() != nil || time.Until(deadline) < cfg.ConnectionTimeout ||
			!strings.Contains(err.Error(), "didn't respond") {
			return conn, err
		}
	}
}

// tsPacketSize is the size of an MPEG-TS packet.
const tsPacketSize = 188

// tsReader finds the start of each video frame in MPEG-TS: a packet
// starting a PES packet of a video stream (stream ID 0xE0 to 0xEF). The
// frame number follows the PES header, in that packet or the next of the
// stream.
type tsReader struct {
	local    net.Addr // the connection's, for cfg.FirstFrames
	carry    [tsPacketSize]byte
	carryN   int
	videoPID int // -1 until known

	// A frame started whose number is not in its first packet.
	pending   bool
	pendingAt time.Time
	tail      [seiNALLen]byte // the end of the frame's first packet
	join      [seiNALLen + tsPacketSize]byte
}

// feed reads data, an SRT packet's payload, received at now. SRT senders
// put a whole number of TS packets in each; others are put together.
func (t *tsReader) feed(p *player, data []byte, now time.Time) {
	if t.carryN > 0 {
		n := copy(t.carry[t.carryN:], data)
		t.carryN += n
		data = data[n:]
		if t.carryN < tsPacketSize {
			return
		}
		t.carryN = 0
		t.packet(p, t.carry[:], now)
	}
	for len(data) > 0 {
		if data[0] != 0x47 { // lost sync: find it again
			if i := bytes.IndexByte(data, 0x47); i > 0 {
				data = data[i:]
				continue
			}
			return
		}
		if len(data) < tsPacketSize {
			t.carryN = copy(t.carry[:], data)
			return
		}
		t.packet(p, data[:tsPacketSize], now)
		data = data[tsPacketSize:]
	}
}

// packet reads one TS packet.
func (t *tsReader) packet(p *player, pkt []byte, now time.Time) {
	pid := int(pkt[1]&0x1f)<<8 | int(pkt[2])
	start := pkt[1]&0x40 != 0
	afc := pkt[3] >> 4 & 3
	off, random := 4, false
	if afc&2 != 0 {
		alen := int(pkt[4])
		if alen > 0 && len(pkt) > 5 {
			random = pkt[5]&0x40 != 0
		}
		off = 5 + alen
	}
	var payload []byte
	if afc&1 != 0 && off < len(pkt) {
		payload = pkt[off:]
	}
	if t.pending && pid == t.videoPID {
		t.pending = false
		if !start {
			// The number across the two packets' boundary, or in the
			// second.
			b := append(append(t.join[:0], t.tail[:]...), payload...)
			seq, ok := frameNumber(b)
			p.frame(t.pendingAt, seq, ok)
			return
		}
		p.frame(t.pendingAt, 0, false)
	}
	if !start || len(payload) < 9 || payload[0] != 0 || payload[1] != 0 || payload[2] != 1 || payload[3]&0xf0 != 0xe0 {
		return
	}
	t.videoPID = pid
	if p.first.IsZero() && (random || hasIDR(payload)) {
		p.firstPicture(t.local, now)
	}
	if seq, ok := frameNumber(payload); ok {
		p.frame(now, seq, true)
		return
	}
	t.pending, t.pendingAt = true, now
	if len(payload) >= len(t.tail) {
		copy(t.tail[:], payload[len(payload)-len(t.tail):])
	} else {
		t.tail = [seiNALLen]byte{}
		copy(t.tail[len(t.tail)-len(payload):], payload)
	}
}

// startCode begins each NAL unit in Annex B H.264.
var startCode = []byte{0, 0, 1}

// hasIDR reports whether Annex B H.264 data has the start of an IDR NAL
// unit.
func hasIDR(b []byte) bool {
	for {
		i := bytes.Index(b, startCode)
		if i < 0 || i+3 >= len(b) {
			return false
		}
		if b[i+3]&0x1f == nalIDR {
			return true
		}
		b = b[i+3:]
	}
}
