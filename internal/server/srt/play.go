package srt

import (
	"bufio"
	"context"
	"errors"
	"io"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/mpegts"
	"github.com/meshcast/meshcast/internal/stream"
)

// play sends a stream to an SRT viewer as MPEG-TS until the stream ends,
// the viewer leaves or the server closes; sess is its session.
func (s *Server) play(conn gosrt.Conn, rd *stream.Reader, sess hub.Session) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.live, conn)
		s.mu.Unlock()
		s.conns.Add(-1)
		rd.Close()
		conn.Close()
	}()
	log := s.log.With("stream", sess.Stream, "remote", sess.RemoteAddr)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	_, endSession := s.hub.StartSession(sess, func() { cancel(); conn.Close() })
	defer endSession()
	log.Info("play started")
	err := remux(ctx, rd, bufio.NewWriterSize(conn, mpegts.ChunkSize))
	switch {
	case errors.Is(err, io.EOF):
		log.Info("play ended: stream ended")
	default:
		log.Info("play ended", "err", err)
	}
}

// remux writes the packets of rd as MPEG-TS to w, flushing a whole
// number of TS packets at a time.
func remux(ctx context.Context, rd *stream.Reader, w *bufio.Writer) error {
	mux := &mpegts.Muxer{W: w}
	pkts := make([]*media.Packet, 0, 256)
	for {
		var err error
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		if err != nil {
			return err
		}
		for _, p := range pkts {
			if err := mux.WritePacket(p); err != nil {
				return err
			}
		}
		clear(pkts)
		// The buffer sent whole SRT payloads as it filled; the rest, whole
		// TS packets too, leaves now.
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
