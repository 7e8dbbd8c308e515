package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"

	"github.com/meshcast/meshcast/internal/media"
)

// errOtherOrigin refuses a request of an HLS source to another origin than
// its playlist's.
var errOtherOrigin = errors.New("not the playlist's origin: refused")

// pullHLS plays an HLS playlist (MPEG-TS or fMP4 segments) with gohlslib's
// client: its H.264 or HEVC video and AAC audio. Sub-playlists, segments
// and parts come only from the playlist's own origin (scheme, host and
// port), redirects included: a playlist cannot send the node to fetch
// from elsewhere, an internal address say.
func (m *Manager) pullHLS(ctx context.Context, u *url.URL, w PacketWriter) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: m.cfg.Timeout}).DialContext,
		TLSHandshakeTimeout:   m.cfg.Timeout,
		ResponseHeaderTimeout: m.cfg.Timeout,
		IdleConnTimeout:       30 * time.Second,
	}
	defer tr.CloseIdleConnections()
	h := &hlsPull{w: w, fail: cancel}
	c := &gohlslib.Client{
		URI: u.String(),
		// A refusal ends the session at once: gohlslib would wait on a
		// first segment it failed to get.
		HTTPClient: &http.Client{Transport: sameOrigin{origin: origin(u), next: tr, refused: cancel}},
		OnTracks:   h.tracks,
		// gohlslib logs every download with the standard logger by
		// default; the URLs may carry credentials.
		OnDownloadPrimaryPlaylist: func(string) {},
		OnDownloadStreamPlaylist:  func(string) {},
		OnDownloadSegment:         func(string) {},
		OnDownloadPart:            func(string) {},
		OnDecodeError:             func(error) {}, // a damaged sample is skipped
	}
	h.c = c
	if err := c.Start(); err != nil {
		return errors.New("hls: bad playlist URL")
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait2() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		c.Close()
		<-done
	}
	if cause := context.Cause(ctx); cause != nil {
		return cause // w refused a packet, or ctx ended
	}
	var ue *url.Error
	if errors.As(err, &ue) { // its URL may carry credentials
		return fmt.Errorf("hls: %s %s: %w", ue.Op, Redact(ue.URL), ue.Err)
	}
	return fmt.Errorf("hls: %w", err)
}

// hlsPull turns one HLS session's tracks into packets. gohlslib calls
// each track's callback from its own goroutine: writes are serialized.
type hlsPull struct {
	c    *gohlslib.Client
	w    PacketWriter
	fail context.CancelCauseFunc

	mu     sync.Mutex
	failed bool
	video  media.NALUPacketizer
	ps     [][]byte // the video's out-of-band parameter sets (fMP4), sent before its first frame
	out    []*media.Packet
	aac    *media.AACConfig
}

// write sends p to w; the first refusal ends the session. Caller holds
// h.mu.
func (h *hlsPull) write(p *media.Packet) {
	if h.failed {
		return
	}
	if err := h.w.WritePacket(p); err != nil {
		h.failed = true
		h.fail(err)
	}
}

// tracks picks the first H.264 or HEVC track and the first AAC track.
func (h *hlsPull) tracks(tracks []*gohlslib.Track) error {
	var video, audio *gohlslib.Track
	for _, t := range tracks {
		switch c := t.Codec.(type) {
		case *codecs.H264:
			if video == nil {
				video, h.ps = t, nonEmpty(c.SPS, c.PPS)
			}
		case *codecs.H265:
			if video == nil {
				video, h.ps = t, nonEmpty(c.VPS, c.SPS, c.PPS)
				h.video.HEVC = true
			}
		case *codecs.MPEG4Audio:
			if audio != nil {
				continue
			}
			b, err := c.Config.Marshal()
			if err != nil {
				return fmt.Errorf("AAC configuration: %w", err)
			}
			if h.aac, err = media.ParseAACConfig(b); err != nil {
				return err
			}
			audio = t
		}
	}
	if video == nil && audio == nil {
		return errors.New("no H.264, HEVC or AAC track: meshcast takes H.264 or HEVC video and AAC audio")
	}
	if video != nil {
		rate := int64(video.ClockRate)
		h.c.OnDataH26x(video, func(pts, dts int64, au [][]byte) {
			h.frame(max(pts, 0)*1000/rate, max(dts, 0)*1000/rate, au)
		})
	}
	if audio != nil {
		h.mu.Lock()
		h.write(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: h.aac.Raw})
		h.mu.Unlock()
		rate := int64(audio.ClockRate)
		h.c.OnDataMPEG4Audio(audio, func(pts int64, aus [][]byte) {
			h.audio(max(pts, 0)*1000/rate, aus)
		})
	}
	return nil
}

// frame writes one access unit, shown at pts and decoded at dts
// (milliseconds).
func (h *hlsPull) frame(pts, dts int64, au [][]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ps != nil {
		au = append(h.ps, au...)
		h.ps = nil
	}
	for _, p := range h.video.Packets(h.out[:0], dts, max(pts, dts), au) {
		h.write(p)
	}
}

// audio writes AAC access units, the first at dts (milliseconds), 1024
// samples each.
func (h *hlsPull) audio(dts int64, aus [][]byte) {
	rate := int64(h.aac.Config.SampleRate)
	if rate <= 0 {
		rate = 48000
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, au := range aus {
		if len(au) > 0 {
			h.write(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts + int64(i)*1024*1000/rate, Payload: au})
		}
	}
}

func nonEmpty(bs ...[]byte) [][]byte {
	var out [][]byte
	for _, b := range bs {
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// sameOrigin refuses requests to another origin than its own, redirects
// included: http.Client sends each hop through its Transport. It tells
// refused of each refusal.
type sameOrigin struct {
	origin  string
	next    http.RoundTripper
	refused func(error)
}

func (s sameOrigin) RoundTrip(r *http.Request) (*http.Response, error) {
	if o := origin(r.URL); o != s.origin {
		if r.Body != nil {
			r.Body.Close()
		}
		err := fmt.Errorf("hls: %s: %w", o, errOtherOrigin)
		s.refused(err)
		return nil, err
	}
	return s.next.RoundTrip(r)
}

// origin is a URL's scheme, host and port (RFC 6454), the port explicit.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
