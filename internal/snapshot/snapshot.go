// Package snapshot serves a live stream's latest keyframe as a JPEG:
// GET /APP/STREAM/snapshot.jpg, decoded by ffmpeg at most once a second per
// stream and width however many ask, with a bounded number of decodes at
// once across streams, each within a timeout. A node without the stream
// asks its owner's signed internal endpoint rather than opening a relay.
package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Widths are the widths a snapshot may be scaled to (?width=); without
// one it has the stream's own size.
var Widths = []int{160, 320, 640, 1280}

// InternalPath prefixes the signed route by which a node asks a stream's
// owner for a snapshot: InternalPath+"APP/STREAM?width=W".
const InternalPath = "/internal/v1/snapshot/"

// maxJPEG bounds a decoded snapshot.
const maxJPEG = 8 << 20

// Errors the routes answer with.
var (
	errNotLive  = errors.New("the stream is not live")
	errBusy     = errors.New("too many snapshots being decoded: try again")
	errNoKey    = errors.New("no keyframe came in time")
	errAV1      = errors.New("snapshots of AV1 streams are not served")
	errNoOwner  = errors.New("no node has the stream")
	errNotFound = errors.New("not found")
)

// Hub is what snapshots need of the node's streams.
type Hub interface {
	Get(name streamname.Name) *stream.Stream
}

// Peers sends signed requests to other nodes and checks theirs
// (cluster.PeerClient).
type Peers interface {
	Do(req *http.Request) (*http.Response, error)
	Verify(r *http.Request) (cluster.NodeID, error)
}

// Config configures the service.
type Config struct {
	// FFmpeg is the ffmpeg binary. Defaults to "ffmpeg".
	FFmpeg string
	// MaxDecodes bounds the decodes at once, all streams together.
	// Defaults to 2.
	MaxDecodes int
	// Timeout bounds one snapshot: the keyframe, the decode, or the
	// owner's answer. Defaults to 5s.
	Timeout time.Duration
	// Every is how long a snapshot is served again before the next
	// decode. Defaults to 1s.
	Every time.Duration
	// Auth admits players; nil admits everybody.
	Auth auth.Authorizer
	// Owner returns the HTTP address (host:port) of the node that has a
	// stream this node lacks, or an error; nil: only local streams.
	Owner func(ctx context.Context, name streamname.Name) (string, error)
	// Peers signs the requests to the owner and checks those of other
	// nodes; nil: neither.
	Peers Peers
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Service serves snapshots.
type Service struct {
	cfg     Config
	hub     Hub
	log     *slog.Logger
	sem     chan struct{}
	group   singleflight.Group
	decodes atomic.Int64

	mu    sync.Mutex
	cache map[string]shot // by stream and width
}

// shot is a decoded snapshot.
type shot struct {
	jpeg []byte
	at   time.Time
}

// New returns a service over the streams of h.
func New(cfg Config, h Hub) *Service {
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	if cfg.MaxDecodes <= 0 {
		cfg.MaxDecodes = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg, hub: h, log: cfg.Logger.With("component", "snapshot"),
		sem: make(chan struct{}, cfg.MaxDecodes), cache: make(map[string]shot)}
}

// Decodes returns how many decodes the service has run.
func (s *Service) Decodes() int64 { return s.decodes.Load() }

// Register adds the routes: GET /APP/STREAM/snapshot.jpg for players the
// authorizer admits, and the signed internal route other nodes ask.
func (s *Service) Register(mux *httpfront.Mux) {
	mux.HandleStreamPath("snapshot.jpg", s.serve)
	mux.HandleFunc("GET "+InternalPath+"{app}/{stream}", s.serveInternal)
}

// serve answers a player.
func (s *Service) serve(w http.ResponseWriter, r *http.Request) {
	name, width, ok := request(w, r)
	if !ok {
		return
	}
	if _, err := auth.CheckHTTP(w, r, s.cfg.Auth, auth.Play, name, "snapshot"); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	jpeg, err := s.Snapshot(ctx, name, width)
	if errors.Is(err, errNotLive) && s.cfg.Owner != nil && s.cfg.Peers != nil {
		jpeg, err = s.remote(ctx, name, width)
	}
	write(w, jpeg, err)
}

// serveInternal answers another node, for a stream of this node only.
func (s *Service) serveInternal(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Peers == nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if _, err := s.cfg.Peers.Verify(r); err != nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	name, width, ok := request(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	jpeg, err := s.Snapshot(ctx, name, width)
	write(w, jpeg, err)
}

// request reads a route's stream name and width, or answers why not.
func request(w http.ResponseWriter, r *http.Request) (streamname.Name, int, bool) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", 0, false
	}
	width := 0
	if v := r.URL.Query().Get("width"); v != "" {
		width, err = strconv.Atoi(v)
		if err != nil || !validWidth(width) {
			http.Error(w, fmt.Sprintf("width is one of %v", Widths), http.StatusBadRequest)
			return "", 0, false
		}
	}
	return name, width, true
}

func validWidth(w int) bool {
	for _, v := range Widths {
		if v == w {
			return true
		}
	}
	return false
}

// write answers with jpeg, or with err's status.
func write(w http.ResponseWriter, jpeg []byte, err error) {
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("Content-Length", strconv.Itoa(len(jpeg)))
		w.Write(jpeg)
	case errors.Is(err, errNotLive), errors.Is(err, errNoOwner), errors.Is(err, errNotFound):
		http.Error(w, "the stream is not live", http.StatusNotFound)
	case errors.Is(err, errAV1):
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		http.Error(w, "no snapshot: "+err.Error(), http.StatusServiceUnavailable)
	}
}

// Snapshot returns the JPEG of name's latest keyframe at width (0: the
// stream's own size): the one decoded less than Every ago, or a new one,
// shared by every caller asking meanwhile.
func (s *Service) Snapshot(ctx context.Context, name streamname.Name, width int) ([]byte, error) {
	key := string(name) + "\x00" + strconv.Itoa(width)
	s.mu.Lock()
	if c, ok := s.cache[key]; ok && time.Since(c.at) < s.cfg.Every {
		s.mu.Unlock()
		return c.jpeg, nil
	}
	s.mu.Unlock()
	v, err, _ := s.group.Do(key, func() (any, error) {
		s.mu.Lock()
		if c, ok := s.cache[key]; ok && time.Since(c.at) < s.cfg.Every {
			s.mu.Unlock()
			return c.jpeg, nil
		}
		s.mu.Unlock()
		// The decode is the group's, not one caller's: it runs to its own
		// timeout whoever leaves.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		defer cancel()
		jpeg, err := s.decode(dctx, name, width)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		for k, c := range s.cache { // the stale go as new ones come
			if time.Since(c.at) >= s.cfg.Every {
				delete(s.cache, k)
			}
		}
		s.cache[key] = shot{jpeg: jpeg, at: time.Now()}
		s.mu.Unlock()
		return jpeg, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// decode takes name's latest keyframe and has ffmpeg make a JPEG of it.
func (s *Service) decode(ctx context.Context, name streamname.Name, width int) ([]byte, error) {
	st := s.hub.Get(name)
	if st == nil {
		return nil, errNotLive
	}
	au, codec, err := keyframe(ctx, st)
	if err != nil {
		return nil, err
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return nil, errBusy
	}
	s.decodes.Add(1)
	format := "h264"
	if codec == media.CodecH265 {
		format = "hevc"
	}
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-f", format, "-i", "pipe:0", "-frames:v", "1"}
	if width > 0 {
		args = append(args, "-vf", fmt.Sprintf("scale=%d:-2", width))
	}
	args = append(args, "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "pipe:1")
	cmd := exec.CommandContext(ctx, s.cfg.FFmpeg, args...)
	cmd.WaitDelay = time.Second
	cmd.Stdin = bytes.NewReader(au)
	var out, stderr bytes.Buffer
	cmd.Stdout = &limited{w: &out, n: maxJPEG}
	cmd.Stderr = &limited{w: &stderr, n: 4 << 10}
	if err := cmd.Run(); err != nil {
		s.log.Warn("snapshot decode failed", "stream", name, "err", err, "ffmpeg", stderr.String())
		return nil, fmt.Errorf("decoding the keyframe: %w", err)
	}
	if out.Len() == 0 {
		return nil, errors.New("ffmpeg made no picture")
	}
	return out.Bytes(), nil
}

// keyframe returns the stream's latest keyframe as an Annex B access unit
// with its parameter sets, and its codec.
func keyframe(ctx context.Context, st *stream.Stream) ([]byte, media.Codec, error) {
	rd, err := st.NewReader(hub.SnapshotProtocol)
	if err != nil {
		return nil, 0, errNotLive
	}
	defer rd.Close()
	var cfg *media.VideoConfig
	var pkts []*media.Packet
	for {
		pkts, err = rd.ReadPackets(ctx, pkts[:0])
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, errNoKey
			}
			return nil, 0, errNotLive
		}
		for _, p := range pkts {
			if p.Kind != media.KindVideo {
				continue
			}
			if p.Codec == media.CodecAV1 {
				return nil, 0, errAV1
			}
			if p.SeqHeader {
				if cfg, err = media.ParseVideoConfig(p.Codec, p.Payload); err != nil {
					return nil, 0, err
				}
				continue
			}
			if !p.Keyframe || cfg == nil {
				continue
			}
			units, err := media.SplitFrame(p.Codec, p.Payload)
			if err != nil {
				return nil, 0, err
			}
			var au []byte
			for _, u := range cfg.WithParamSets(units, true) {
				au = append(append(au, 0, 0, 0, 1), u...)
			}
			return au, p.Codec, nil
		}
	}
}

// remote asks the node that has the stream for its snapshot.
func (s *Service) remote(ctx context.Context, name streamname.Name, width int) ([]byte, error) {
	addr, err := s.cfg.Owner(ctx, name)
	if err != nil {
		return nil, errNoOwner
	}
	url := "http://" + addr + InternalPath + string(name)
	if width > 0 {
		url += "?width=" + strconv.Itoa(width)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.cfg.Peers.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, errNotFound
	default:
		return nil, fmt.Errorf("the stream's node answered %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxJPEG))
}

// limited writes at most n bytes to w and drops the rest.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	k := min(len(p), l.n)
	l.n -= k
	l.w.Write(p[:k])
	return len(p), nil
}
