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
	"sync"
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
// timestamps that keep increasing across loops and reconnections.
type publisher struct {
	src       *source
	sent      *sendTable
	delay     time.Duration // before reconnecting; 0: 500 ms
	frames    atomic.Int64  // video frames sent
	lastVideo atomic.Int64  // timestamp of the latest video frame sent

	// Where the next session goes on from: owned by run.
	seq   uint32    // frame number of the last frame sent; 0 is never sent
	start time.Time // when the source's timestamp 0 was (or would have been) sent
	next  int       // index in the loop of the next tag to send
	loop  uint32

	failMu   sync.Mutex
	failN    int64
	failWait time.Duration // the longest redial-to-accepted so far
}

// resetFailovers forgets the failovers counted so far.
func (p *publisher) resetFailovers() {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	p.failN, p.failWait = 0, 0
}

// failovers returns the reconnections to another URL counted since the
// last reset, and the longest wait for one to be accepted, in ms.
func (p *publisher) failovers() (int64, float64) {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	return p.failN, float64(p.failWait.Milliseconds())
}

// run publishes to urls[0] until ctx ends. With more URLs, a broken
// session reconnects to the next one after the reconnect delay, and goes
// on from the next keyframe. inWindow dates the failovers worth counting.
func (p *publisher) run(ctx context.Context, urls []string, inWindow func(time.Time) bool) error {
	delay := p.delay
	if delay <= 0 {
		delay = 500 * time.Millisecond
	}
	p.start = time.Now()
	for i := 0; ; i++ {
		u := urls[i%len(urls)]
		redial := time.Now()
		accepted, err := p.session(ctx, u, func(at time.Time) {
			if i > 0 && inWindow(redial) {
				p.failMu.Lock()
				p.failN++
				p.failWait = max(p.failWait, at.Sub(redial))
				p.failMu.Unlock()
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if len(urls) == 1 || (accepted.IsZero() && i >= 20*len(urls)) {
			return err
		}
		if !accepted.IsZero() {
			// A session that was publishing broke: wait, as an encoder
			// does, then try the next URL.
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
		} else {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// session publishes to rawURL until ctx ends or the connection fails.
// accepted is when the server accepted the publish, also told to onAccept
// then; zero if it did not.
func (p *publisher) session(ctx context.Context, rawURL string, onAccept func(time.Time)) (accepted time.Time, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "rtmp" {
		return time.Time{}, fmt.Errorf("publish URL %q: want rtmp://HOST:PORT/APP/STREAM", rawURL)
	}
	app, key, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok {
		return time.Time{}, fmt.Errorf("publish URL %q: want rtmp://HOST:PORT/APP/STREAM", rawURL)
	}
	if u.RawQuery != "" {
		key += "?" + u.RawQuery
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "1935")
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", host)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := rtmp.NewClient(conn)
	if err != nil {
		return time.Time{}, err
	}
	if err := c.Connect(app, "rtmp://"+host+"/"+app); err != nil {
		return time.Time{}, err
	}
	if err := c.Publish(key); err != nil {
		return time.Time{}, err
	}
	accepted = time.Now()
	onAccept(accepted)
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
	// The first tags are decoder configuration: sent first in each session.
	var loopStart int
	for i, t := range p.src.tags {
		if len(t.body) > 1 && t.body[1] == 0 { // AVC/AAC sequence header
			c.WriteMedia(t.typ, 0, t.body)
			loopStart = i + 1
			continue
		}
		break
	}
	tags := p.src.tags[loopStart:]
	if p.frames.Load() > 0 {
		p.resume(tags)
	}
	var marked []byte
	for ; ; p.loop, p.next = p.loop+1, 0 {
		base := p.loop * p.src.duration
		for ; p.next < len(tags); p.next++ {
			t := tags[p.next]
			ts := base + t.ts
			if wait := time.Until(p.start.Add(time.Duration(ts) * time.Millisecond)); wait > 0 {
				if err := c.Flush(); err != nil {
					return accepted, err
				}
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return accepted, nil
				}
			}
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			body := t.body
			if t.typ == flv.TagVideo && len(body) > 5 {
				p.seq++
				marked = appendMarked(marked[:0], body, p.seq)
				body = marked
				// Stamped before it is written: a server on loopback can
				// deliver it before the write returns.
				p.sent.put(p.seq, time.Now())
			}
			if err := c.WriteMedia(t.typ, ts, body); err != nil {
				if ctx.Err() != nil {
					return accepted, nil
				}
				return accepted, err
			}
			if t.typ == flv.TagVideo {
				if err := c.Flush(); err != nil {
					return accepted, err
				}
				p.frames.Add(1)
				p.lastVideo.Store(int64(ts))
			}
		}
	}
}

// resume moves a reconnected publisher on to now: to the first keyframe
// not yet due, sent at once (an encoder that reconnects starts with one),
// the source's clock moved so that the frames after it keep their pace.
func (p *publisher) resume(tags []tag) {
	now := time.Now()
	at := func() time.Time {
		return p.start.Add(time.Duration(p.loop*p.src.duration+tags[p.next].ts) * time.Millisecond)
	}
	isKey := func(t tag) bool { return t.typ == flv.TagVideo && len(t.body) > 0 && t.body[0]>>4 == 1 }
	for range 2 * len(tags) {
		if p.next >= len(tags) {
			p.loop, p.next = p.loop+1, 0
		}
		if !at().Before(now) && isKey(tags[p.next]) {
			p.start = p.start.Add(-at().Sub(now))
			return
		}
		p.next++
	}
	if p.next >= len(tags) {
		p.loop, p.next = p.loop+1, 0
	}
}
