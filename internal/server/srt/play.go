package srt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
)

// tsChunk is what one SRT packet carries: seven MPEG-TS packets, the
// payload size SRT senders use.
const tsChunk = 7 * 188

// tsBase keeps MPEG-TS timestamps, and the clock reference a little
// before them, positive.
const tsBase = 90000

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
	err := remux(ctx, rd, bufio.NewWriterSize(conn, tsChunk))
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
	var mw *mpegts.Writer
	var vt, at *mpegts.Track
	var video *media.VideoConfig // H.264 or HEVC: MPEG-TS carries no AV1
	var aac *media.AACConfig
	start := func() error {
		mw = &mpegts.Writer{W: w}
		vt, at = nil, nil
		if video != nil {
			vt = &mpegts.Track{Codec: &tscodecs.H264{}}
			if video.Codec == media.CodecH265 {
				vt.Codec = &tscodecs.H265{}
			}
			mw.Tracks = append(mw.Tracks, vt)
		}
		if aac != nil {
			at = &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: aac.Config}}
			mw.Tracks = append(mw.Tracks, at)
		}
		return mw.Initialize()
	}
	pkts := make([]*media.Packet, 0, 256)
	for {
		var err error
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		if err != nil {
			return err
		}
		for _, p := range pkts {
			switch {
			case p.SeqHeader && (p.Codec == media.CodecH264 || p.Codec == media.CodecH265):
				if c, err := media.ParseVideoConfig(p.Codec, p.Payload); err == nil {
					video, mw = c, nil
				}
			case p.SeqHeader && p.Codec == media.CodecAAC:
				if c, err := media.ParseAACConfig(p.Payload); err == nil {
					aac, mw = c, nil
				}
			case p.Kind == media.KindVideo && video != nil && p.Codec == video.Codec:
				if mw == nil {
					if !p.Keyframe {
						continue // a decoder starts at a keyframe
					}
					if err := start(); err != nil {
						return err
					}
				}
				nalus, err := media.AVCCToNALUs(p.Payload)
				if err != nil || len(nalus) == 0 {
					continue
				}
				nalus = video.WithParamSets(nalus, p.Keyframe)
				pts, dts := tsBase+p.PTS()*90, tsBase+p.DTS*90
				if video.Codec == media.CodecH265 {
					err = mw.WriteH265(vt, pts, dts, nalus)
				} else {
					err = mw.WriteH264(vt, pts, dts, nalus)
				}
				if err != nil {
					return fmt.Errorf("mpeg-ts: %w", err)
				}
			case p.Kind == media.KindAudio && !p.SeqHeader && aac != nil && (mw != nil || video == nil):
				if mw == nil {
					if err := start(); err != nil {
						return err
					}
				}
				if at == nil {
					continue
				}
				if err := mw.WriteMPEG4Audio(at, tsBase+p.DTS*90, [][]byte{p.Payload}); err != nil {
					return fmt.Errorf("mpeg-ts: %w", err)
				}
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
