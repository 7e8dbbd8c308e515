package push

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/mpegts"
	"github.com/meshcast/meshcast/internal/srtconn"
)

// srtSecrets are the query parameters of an srt:// target that are never
// shown: the stream ID carries stream keys.
var srtSecrets = []string{"streamid", "passphrase"}

// srtConfig reads an srt://HOST:PORT?streamid=...&passphrase=...&latency=MS
// target into a caller's configuration; timeout bounds connecting and how
// long the target may stay silent.
func srtConfig(u *url.URL, timeout time.Duration) (gosrt.Config, error) {
	bad := func(why string) (gosrt.Config, error) {
		return gosrt.Config{}, fmt.Errorf("%w (%s)", ErrBadTarget, why)
	}
	if port, err := strconv.Atoi(u.Port()); u.Hostname() == "" || err != nil || port < 1 || port > 65535 {
		return bad("srt:// needs HOST:PORT")
	}
	if u.User != nil || strings.Trim(u.Path, "/") != "" || u.Fragment != "" {
		return bad("srt:// has no user info or path, and a # in the stream ID is written %23")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("srt:// query")
	}
	c := gosrt.DefaultConfig()
	c.ConnectionTimeout = timeout
	c.PeerIdleTimeout = timeout
	for k, v := range q {
		if len(v) != 1 {
			return bad(k + " is given more than once")
		}
		switch k {
		case "streamid":
			c.StreamId = v[0]
		case "passphrase":
			// libsrt takes 10 to 79 bytes (SRTO_PASSPHRASE); gosrt also 80.
			if len(v[0]) < 10 || len(v[0]) > 79 {
				return bad("passphrase is 10 to 79 characters")
			}
			c.Passphrase = v[0]
		case "latency":
			ms, err := strconv.Atoi(v[0])
			if err != nil || ms < 0 || ms > 60000 {
				return bad("latency is in milliseconds")
			}
			c.Latency = time.Duration(ms) * time.Millisecond
		default:
			return bad("srt:// takes streamid, passphrase and latency")
		}
	}
	// Its messages name limits, never the values.
	if err := c.Validate(); err != nil {
		return bad(err.Error())
	}
	return c, nil
}

// redactSRT blanks the secret query values of an srt:// target u in msg.
func redactSRT(msg string, u *url.URL) string {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return msg
	}
	for _, k := range srtSecrets {
		if v := q.Get(k); v != "" {
			msg = strings.ReplaceAll(msg, v, "xxx")
			msg = strings.ReplaceAll(msg, url.QueryEscape(v), "xxx")
		}
	}
	return msg
}

// onceSRT connects to an srt:// target as a caller and sends the stream
// as MPEG-TS until something fails; started is called once it is
// connected and reading the stream.
func (p *pusher) onceSRT(ctx context.Context, u *url.URL, started func()) error {
	cfg, err := srtConfig(u, p.m.cfg.Timeout)
	if err != nil {
		return err
	}
	addr, err := p.m.checkedAddr(ctx, u.Host)
	if err != nil {
		return err
	}
	// gosrt.Dial takes no context: connecting is bounded by the timeout,
	// and a push stopped meanwhile ends when it is over.
	conn, err := gosrt.Dial("srt", addr, cfg)
	if err != nil {
		return fmt.Errorf("srt: connect: %w", err)
	}
	defer srtconn.Close(conn)
	stopOnCancel := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopOnCancel()
	rd, err := p.m.hub.NewReader(p.name, Protocol)
	if err != nil {
		return err
	}
	defer rd.Close()
	started()
	return sendTS(ctx, rd, conn, &p.sent)
}

// packetReader is what sendTS reads: a stream.Reader.
type packetReader interface {
	ReadPackets(ctx context.Context, into []*media.Packet) ([]*media.Packet, error)
}

// sendTS writes what rd reads to conn as MPEG-TS, seven TS packets to an
// SRT packet, counting the bytes in sent. An SRT write never blocks: it
// fails when the send queue is full, and the connection closes when the
// target is silent for the configured timeout.
func sendTS(ctx context.Context, rd packetReader, conn gosrt.Conn, sent *atomic.Int64) error {
	w := bufio.NewWriterSize(countingWriter{conn, sent}, mpegts.ChunkSize)
	mux := &mpegts.Muxer{W: w}
	pkts := make([]*media.Packet, 0, 256)
	for {
		var err error
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		if err != nil {
			return err
		}
		for _, pkt := range pkts {
			if err := mux.WritePacket(pkt); err != nil {
				return err
			}
		}
		clear(pkts)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("srt: write: %w", err)
		}
	}
}

// countingWriter adds what it writes to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
