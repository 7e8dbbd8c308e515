package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
)

// tag is one FLV tag of the source file.
type tag struct {
	typ  uint8
	ts   uint32
	body []byte
}

// source is an FLV file held in memory, published in a loop.
type source struct {
	tags     []tag
	duration uint32 // ms from the first tag to one frame past the last
	bitrate  int64  // bits per second of payload
}

func loadSource(path string) (*source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := flv.NewReader(f)
	if _, _, err := r.ReadHeader(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &source{}
	var bytes int64
	var first uint32
	for {
		typ, ts, body, err := r.ReadTag()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if typ != flv.TagAudio && typ != flv.TagVideo {
			continue
		}
		if len(s.tags) == 0 {
			first = ts
		}
		s.tags = append(s.tags, tag{typ: typ, ts: ts - first, body: body})
		bytes += int64(len(body))
	}
	if len(s.tags) < 2 {
		return nil, fmt.Errorf("%s: no media", path)
	}
	s.duration = s.tags[len(s.tags)-1].ts + 33
	s.bitrate = bytes * 8 * 1000 / int64(s.duration)
	return s, nil
}

// Every video frame the publisher sends carries a frame number in an SEI
// NAL unit (user data unregistered, which decoders ignore) placed first in
// the frame. Players find it in the first bytes they receive, so latency is
// measured per frame whatever a server does to timestamps: nginx-rtmp, for
// one, rewrites them for each player.
//
// The frame's payload then starts: FLV AVC header (5 bytes), NAL length
// (4), NAL header 0x06, payload type 5, payload size, the 16-byte marker,
// the frame number in 5 bytes of 7 bits each (high bit set, so the NAL needs
// no emulation prevention), and the RBSP trailing byte.
var frameMarker = [16]byte{0x6d, 0x65, 0x73, 0x68, 0x63, 0x61, 0x73, 0x74, 0x2d, 0x62, 0x65, 0x6e, 0x63, 0x68, 0x2d, 0x31} // "meshcast-bench-1"

const (
	seqLen    = 5
	seiNALLen = 3 + len(frameMarker) + seqLen + 1
	seiLen    = 4 + seiNALLen
)

// appendMarked appends the FLV AVC video body with the numbered SEI
// inserted before its first NAL unit.
func appendMarked(dst, body []byte, seq uint32) []byte {
	dst = append(dst, body[:5]...)
	dst = append(dst, 0, 0, 0, byte(seiNALLen), 0x06, 0x05, byte(len(frameMarker)+seqLen))
	dst = append(dst, frameMarker[:]...)
	for i := seqLen - 1; i >= 0; i-- {
		dst = append(dst, 0x80|byte(seq>>(7*i))&0x7f)
	}
	dst = append(dst, 0x80)
	return append(dst, body[5:]...)
}

// frameNumber finds the marker in the first bytes of a received video body.
func frameNumber(prefix []byte) (uint32, bool) {
	i := bytes.Index(prefix, frameMarker[:])
	if i < 0 || i+len(frameMarker)+seqLen > len(prefix) {
		return 0, false
	}
	var seq uint32
	for _, b := range prefix[i+len(frameMarker) : i+len(frameMarker)+seqLen] {
		seq = seq<<7 | uint32(b&0x7f)
	}
	return seq, true
}

// sendTable remembers when each video frame was sent, keyed by frame
// number, so players can compute per-frame latency without locks. At 30
// frames per second a slot is reused after nine minutes.
type sendTable struct {
	start time.Time
	slots [1 << 14]atomic.Uint64 // seq<<32 | microseconds since start
}

func (t *sendTable) put(seq uint32, at time.Time) {
	us := uint64(at.Sub(t.start).Microseconds())
	t.slots[seq&(1<<14-1)].Store(uint64(seq)<<32 | us&0xffffffff)
}

// sentAt returns when video frame seq was sent.
func (t *sendTable) sentAt(seq uint32) (time.Time, bool) {
	v := t.slots[seq&(1<<14-1)].Load()
	if v == 0 || uint32(v>>32) != seq {
		return time.Time{}, false
	}
	return t.start.Add(time.Duration(v&0xffffffff) * time.Microsecond), true
}

// publisher sends the source in a loop, paced by its timestamps, with
// timestamps that keep increasing across loops.
type publisher struct {
	src       *source
	sent      *sendTable
	frames    atomic.Int64 // video frames sent
	lastVideo atomic.Int64 // timestamp of the latest video frame sent
}

// run publishes until ctx ends.
func (p *publisher) run(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "rtmp" {
		return fmt.Errorf("publish URL %q: want rtmp://HOST:PORT/APP/STREAM", rawURL)
	}
	app, key, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok {
		return fmt.Errorf("publish URL %q: want rtmp://HOST:PORT/APP/STREAM", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "1935")
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := rtmp.NewClient(conn)
	if err != nil {
		return err
	}
	if err := c.Connect(app, "rtmp://"+host+"/"+app); err != nil {
		return err
	}
	if err := c.Publish(key); err != nil {
		return err
	}
	// Keep reading so the server's acknowledgement requests and pings are
	// answered; nothing it says matters here.
	go func() {
		for {
			conn.SetReadDeadline(time.Time{})
			if _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	// The first tags are decoder configuration: send them once.
	var loopStart int
	for i, t := range p.src.tags {
		if len(t.body) > 1 && t.body[1] == 0 { // AVC/AAC sequence header
			c.WriteMedia(t.typ, 0, t.body)
			loopStart = i + 1
			continue
		}
		break
	}
	start := time.Now()
	var seq uint32 // frame number; 0 is never sent
	var marked []byte
	for loop := uint32(0); ; loop++ {
		base := loop * p.src.duration
		for _, t := range p.src.tags[loopStart:] {
			ts := base + t.ts
			if wait := time.Until(start.Add(time.Duration(ts) * time.Millisecond)); wait > 0 {
				if err := c.Flush(); err != nil {
					return err
				}
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return nil
				}
			}
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			body := t.body
			if t.typ == flv.TagVideo && len(body) > 5 {
				seq++
				marked = appendMarked(marked[:0], body, seq)
				body = marked
			}
			if err := c.WriteMedia(t.typ, ts, body); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if t.typ == flv.TagVideo {
				if err := c.Flush(); err != nil {
					return err
				}
				p.sent.put(seq, time.Now())
				p.frames.Add(1)
				p.lastVideo.Store(int64(ts))
			}
		}
	}
}
