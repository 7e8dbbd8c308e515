package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/protocol/mpegts"
	"github.com/meshcast/meshcast/internal/srtconn"
)

// pullSRT calls an SRT server, srt://HOST:PORT?streamid=ID&passphrase=P,
// and reads the MPEG-TS it sends: H.264 or HEVC video and AAC audio.
// Connecting is bounded by the timeout (gosrt's dial takes no context).
func (m *Manager) pullSRT(ctx context.Context, u *url.URL, w PacketWriter) error {
	q := u.Query()
	c := gosrt.DefaultConfig()
	c.StreamId = q.Get("streamid")
	c.Passphrase = q.Get("passphrase")
	c.ConnectionTimeout = m.cfg.Timeout
	c.PeerIdleTimeout = m.cfg.Timeout
	conn, err := gosrt.Dial("srt", u.Host, c)
	if err != nil {
		return fmt.Errorf("srt: %w", err)
	}
	defer srtconn.Close(conn)
	// gosrt's connections have no read deadlines: closing one ends a
	// pending read (the session closes it when the source stalls).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err = mpegts.Demux(conn, w, func() {})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		return errors.New("srt: the source closed the connection")
	}
	return fmt.Errorf("srt: %w", err)
}
