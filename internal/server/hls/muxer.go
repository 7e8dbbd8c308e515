package hls

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gohlslib/v2"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// muxer follows one stream and keeps a gohlslib muxer fed with it. The
// gohlslib muxer (a session) is replaced when the stream's decoder
// configuration changes, since its init segment cannot.
type muxer struct {
	s      *Server
	name   streamname.Name
	log    *slog.Logger
	reader *stream.Reader
	ctx    context.Context
	cancel context.CancelCauseFunc

	users   int          // requests in progress; guarded by s.mu
	lastUse time.Time    // end of the latest request; guarded by s.mu
	clients clientSet    // players seen recently; guarded by s.mu
	waiting atomic.Int32 // requests waiting for a view (maxWaiting)

	mu      sync.Mutex
	cur     *session      // nil until the tracks are known, and between sessions
	changed chan struct{} // closed and replaced whenever cur changes
}

func newMuxer(s *Server, name streamname.Name, r *stream.Reader) *muxer {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &muxer{
		s:       s,
		name:    name,
		log:     s.log.With("stream", string(name)),
		reader:  r,
		ctx:     ctx,
		cancel:  cancel,
		lastUse: time.Now(),
		clients: make(clientSet),
		changed: make(chan struct{}),
	}
}

// run feeds the stream into sessions until the stream ends or the muxer is
// cancelled, then removes the muxer.
func (m *muxer) run() {
	defer m.s.wg.Done()
	f := feeder{m: m}
	err := f.follow()
	m.cancel(err)
	cause := context.Cause(m.ctx)
	if !expectedEnd(cause) {
		m.log.Warn("muxer failed", "err", cause)
	}
	if !f.endSession(reasonText(cause)) {
		m.log.Debug("muxer closed before the stream's tracks were known", "reason", reasonText(cause))
	}
	m.reader.Close()
	m.s.remove(m)
}

// handle runs hm.Handle. gohlslib has panicked on media a publisher can
// send; a panic ends this stream's muxer, not the node: it is logged, the
// request gets a 500, and the next request starts a new muxer.
func (m *muxer) handle(hm *gohlslib.Muxer, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			m.panicked(v)
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	hm.Handle(w, r)
}

// panicked logs a panic recovered from gohlslib and ends the muxer.
func (m *muxer) panicked(v any) {
	m.log.Error("muxer panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	m.cancel(fmt.Errorf("hls: muxer panicked: %v", v))
}

// expectedEnd reports whether a muxer ended the way muxers normally do.
func expectedEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, errIdle) || errors.Is(err, errServerClosed) || errors.Is(err, stream.ErrShutdown)
}

// reasonText says in a log line why a muxer closed.
func reasonText(err error) string {
	switch {
	case errors.Is(err, io.EOF):
		return "stream ended"
	case errors.Is(err, errIdle):
		return "idle"
	case errors.Is(err, errServerClosed), errors.Is(err, stream.ErrShutdown):
		return "server closed"
	case errors.Is(err, stream.ErrSlowReader):
		return "fell behind the stream"
	}
	return err.Error()
}

// current returns the running session, or nil.
func (m *muxer) current() *session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// setSession publishes sess (or nil) to requests.
func (m *muxer) setSession(sess *session) {
	m.mu.Lock()
	m.cur = sess
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// await waits for a running session. It fails with ctx's error, or with
// the reason the muxer ended.
func (m *muxer) await(ctx context.Context) (*session, error) {
	for {
		m.mu.Lock()
		cur, changed := m.cur, m.changed
		m.mu.Unlock()
		if cur != nil {
			return cur, nil
		}
		select {
		case <-changed:
		case <-m.ctx.Done():
			return nil, context.Cause(m.ctx)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// feeder is the state of the goroutine that reads the stream: the newest
// decoder configuration of each kind and the session built from them.
type feeder struct {
	m                  *muxer
	video              *media.VideoConfig // nil: no usable video configuration
	audio              *media.AACConfig
	videoRaw, audioRaw []byte
	sess               *session
}

// follow reads the stream until it ends or the muxer is cancelled. A
// panic in gohlslib while writing ends the muxer with an error.
func (f *feeder) follow() (err error) {
	defer func() {
		if v := recover(); v != nil {
			f.m.panicked(v)
			err = context.Cause(f.m.ctx)
		}
	}()
	pkts := make([]*media.Packet, 0, 512)
	for {
		pkts, err = f.m.reader.ReadPackets(f.m.ctx, pkts[:0])
		if err != nil {
			return fmt.Errorf("hls: read stream: %w", err)
		}
		for _, p := range pkts {
			if err := f.packet(p); err != nil {
				return err
			}
		}
		clear(pkts) // let the log drop packets this slice still points at
	}
}

// packet routes one packet from the stream.
func (f *feeder) packet(p *media.Packet) error {
	switch {
	case p.Kind == media.KindData:
		return nil // onMetaData: everything needed is in the configurations
	case p.SeqHeader && p.Kind == media.KindVideo:
		f.videoConfig(p)
		return nil
	case p.SeqHeader && p.Kind == media.KindAudio:
		f.audioConfig(p)
		return nil
	case p.Kind == media.KindVideo || p.Kind == media.KindAudio:
		return f.frame(p)
	}
	return nil
}

// videoConfig records a video decoder configuration. A different one ends
// the session: the next one starts at the next keyframe with it.
func (f *feeder) videoConfig(p *media.Packet) {
	if bytes.Equal(p.Payload, f.videoRaw) {
		return // the same configuration sent again, e.g. after a reconnect
	}
	f.videoRaw = p.Payload
	f.video = nil
	if c, err := media.ParseVideoConfig(p.Codec, p.Payload); err != nil {
		f.m.log.Warn("invalid video configuration, dropping video", "err", err)
	} else {
		f.video = c
	}
	f.endSession("video configuration changed")
}

// audioConfig records an audio decoder configuration, like videoConfig.
func (f *feeder) audioConfig(p *media.Packet) {
	if bytes.Equal(p.Payload, f.audioRaw) {
		return
	}
	f.audioRaw = p.Payload
	f.audio = nil
	if p.Codec != media.CodecAAC {
		f.m.log.Warn("audio codec not supported by HLS output, dropping audio", "codec", p.Codec.String())
	} else if c, err := media.ParseAACConfig(p.Payload); err != nil {
		f.m.log.Warn("invalid audio configuration, dropping audio", "err", err)
	} else {
		f.audio = c
	}
	f.endSession("audio configuration changed")
}

// frame writes a frame, first starting a session with the tracks whose
// configuration arrived before it. The stream sends every configuration in
// force ahead of a reader's first frame, so a stream with both tracks
// starts with both.
func (f *feeder) frame(p *media.Packet) error {
	if f.sess == nil {
		if f.video == nil && f.audio == nil {
			return nil
		}
		sess, err := startSession(f.m, f.video, f.audio, configTag(f.videoRaw, f.audioRaw))
		if err != nil {
			return err
		}
		f.sess = sess
		f.m.setSession(sess)
	}
	f.sess.write(p)
	return nil
}

// endSession closes the running session and reports whether there was one.
func (f *feeder) endSession(reason string) bool {
	if f.sess == nil {
		return false
	}
	f.m.setSession(nil)
	f.sess.close(reason)
	f.sess = nil
	return true
}
