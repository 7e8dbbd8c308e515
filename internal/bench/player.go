package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/rawio"
)

// stallGap is the longest pause between two video frames that is not a stall.
const stallGap = time.Second

// probeEvery makes every probeEvery-th player a latency probe: it reads
// each byte as soon as it arrives. The others read lazily once playing
// (lazyRead), which keeps the load generator's cost per viewer low enough
// to load a server that writes every frame separately, as nginx-rtmp does.
// The server cannot tell them apart, so the probes' latency is the
// latency every player would see.
const probeEvery = 10

// lazyRead is the receive low-water mark of a lazy player: the kernel wakes
// it when this many bytes are waiting (about 30 ms of a 2 Mbps stream).
const lazyRead = 8 << 10

// firstReads bounds a player's reads until its first picture.
const firstReads = 8 << 10

// player is one viewer. Its fields belong to its goroutine except the atomics.
type player struct {
	r         *runner
	t         *tally    // where its measurements go
	probe     bool      // measures latency and reads eagerly
	lazy      bool      // the receive low-water mark is set
	joinStart time.Time // dialing began
	playStart time.Time // the play request was sent
	first     time.Time
	last      time.Time
	connected atomic.Bool
	bytes     atomic.Int64
	maxGap    atomic.Int64 // longest gap between video frames in the window, ns
}

// gap notes the pause before a frame that arrived now, in the window.
func (p *player) gap(now time.Time) {
	if p.last.IsZero() || !p.r.inWindow(now) {
		return
	}
	g := int64(now.Sub(p.last))
	if g > p.maxGap.Load() {
		p.maxGap.Store(g)
	}
	for {
		m := p.t.gapMax.Load()
		if g <= m || p.t.gapMax.CompareAndSwap(m, g) {
			return
		}
	}
}

// joined records that the server accepted the player.
func (p *player) joined() {
	p.t.join.add(time.Since(p.joinStart))
	p.connected.Store(true)
}

// video records a received AVC frame whose FLV body starts with prefix.
// Time to first frame ends at the first keyframe: the first picture a
// player can show.
func (p *player) video(conn net.Conn, prefix []byte, now time.Time) {
	r := p.r
	if p.first.IsZero() {
		if prefix[0]>>4 != 1 {
			return
		}
		p.first = now
		p.t.ttff.add(now.Sub(p.playStart))
		if r.cfg.FirstFrames != nil {
			r.firstMu.Lock()
			fmt.Fprintf(r.cfg.FirstFrames, "%s %d %d\n", conn.LocalAddr(), p.playStart.UnixNano(), now.UnixNano())
			r.firstMu.Unlock()
		}
		rawio.SetLimit(conn, 0)
		if !p.probe && !p.lazy {
			p.lazy = true
			setLowat(conn, lazyRead)
		}
	}
	inWindow := r.inWindow(now)
	if !p.last.IsZero() && now.Sub(p.last) > stallGap && inWindow {
		p.t.stalls.Add(1)
	}
	p.gap(now)
	p.last = now
	if seq, ok := frameNumber(prefix); ok {
		if sent, ok := r.pub.sent.sentAt(seq); ok && r.inWindow(sent) {
			p.t.windowFrames.Add(1)
			if p.probe {
				p.t.latency.add(now.Sub(sent))
			}
		}
	}
}

// idleTimeout ends a player that receives nothing for this long.
const idleTimeout = 15 * time.Second

// deadline keeps a connection's deadline idleTimeout ahead, moving it (a
// timer update) only when less than two thirds of it is left.
type deadline struct{ at time.Time }

func (d *deadline) refresh(conn net.Conn) {
	now := time.Now()
	if d.at.Sub(now) < idleTimeout*2/3 {
		d.at = now.Add(idleTimeout)
		conn.SetDeadline(d.at)
	}
}

// play runs the player until ctx ends or the connection fails.
func (p *player) play(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	switch proto := p.r.protocol(rawURL); proto {
	case "rtmp":
		return p.playRTMP(ctx, u)
	case "flv":
		return p.playFLV(ctx, u)
	case "hls":
		return p.playHLS(ctx, u, false)
	case "llhls":
		return p.playHLS(ctx, u, true)
	case "whep":
		return p.playWHEP(ctx, u)
	case "srt":
		return p.playSRT(ctx, u)
	default:
		return fmt.Errorf("protocol %q: want one of %s", proto, strings.Join(Protocols, ", "))
	}
}

func hostPort(u *url.URL, port string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func (p *player) dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	// Reads are raw system calls stamped with the kernel's receive time: a
	// player's goroutine may wait its turn for tens of milliseconds while a
	// burst of joins saturates the load generator's core, and frames are
	// timed by their arrival, not by that wait. Until the first picture,
	// reads take firstReads bytes at most: a read is stamped with the
	// arrival of the newest data it took, and data sent after the first
	// picture must not date it.
	rc := rawio.New(conn, true)
	rawio.SetLimit(rc, firstReads)
	return rc, nil
}

func (p *player) playRTMP(ctx context.Context, u *url.URL) error {
	app, key, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok {
		return fmt.Errorf("play URL %q: want rtmp://HOST:PORT/APP/STREAM", u)
	}
	host := hostPort(u, "1935")
	conn, err := p.dial(ctx, host)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	c, err := rtmp.NewClient(conn)
	if err == nil {
		err = c.Connect(app, "rtmp://"+host+"/"+app)
	}
	if err == nil {
		err = c.Play(key)
	}
	if err != nil {
		return err
	}
	p.playStart = c.PlaySent
	c.Skim()
	p.joined()
	var dl deadline
	for {
		dl.refresh(conn)
		m, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if m.Type != rtmp.TypeVideo && m.Type != rtmp.TypeAudio {
			continue
		}
		p.bytes.Add(int64(m.Length))
		// An AVC frame, not a sequence header: FLV video header byte 1 is 1.
		if m.Type == rtmp.TypeVideo && len(m.Payload) >= 2 && m.Payload[1] == 1 {
			p.video(conn, m.Payload, rawio.Received(conn))
		}
	}
}

func (p *player) playFLV(ctx context.Context, u *url.URL) error {
	conn, err := p.dial(ctx, hostPort(u, "80"))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	p.playStart = time.Now()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshcast-bench\r\n\r\n", u.RequestURI(), u.Host)
	br := bufio.NewReaderSize(conn, 32<<10)
	status, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(status, " 200 ") {
		return fmt.Errorf("GET %s: %s", u, strings.TrimSpace(status))
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
	}
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	p.joined()
	var th [11]byte
	var dl deadline
	for {
		dl.refresh(conn)
		if _, err := io.ReadFull(br, th[:]); err != nil {
			return err
		}
		size := int(th[1])<<16 | int(th[2])<<8 | int(th[3])
		if size >= 2 && th[0] == 9 {
			b, err := br.Peek(min(size, rtmp.SkimPrefix))
			if err != nil {
				return err
			}
			if b[1] == 1 {
				p.video(conn, b, rawio.Received(conn))
			}
		}
		if _, err := br.Discard(size + 4); err != nil {
			return err
		}
		p.bytes.Add(int64(size))
	}
}

// isClosed reports errors that only mean the player was stopped.
func isClosed(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF)
}
