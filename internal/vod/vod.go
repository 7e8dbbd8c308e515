// Package vod serves the on-demand library: MP4 files and FLV recordings,
// as HLS (/vod/NAME/index.m3u8, cut at keyframes on the fly, without
// transcoding) and as progressive MP4 with HTTP Range support
// (/vod/NAME.mp4, remuxed on the fly from FLV). It lists, takes uploads of
// and deletes assets through /api/v1/vod.
//
// In a cluster every asset is owned by the nodes that rendezvous hashing
// on its name ranks first among the alive ones (Config.Replicas of them);
// uploads and finished recordings are copied to them. A node asked for an
// asset it does not hold fetches what it serves from an owner through the
// shared cache, so however many viewers ask, each object crosses the
// cluster once.
//
// Names are checked (letters, digits, '_', '-', '.', not starting with a
// dot) before any file system call, and the directory storage opens files
// through an os.Root, so no request reaches outside the library.
package vod

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/meshcast/meshcast/internal/cache"
)

// MaxNameLen bounds an asset name, extension excluded.
const MaxNameLen = 128

// Defaults of Config.
const (
	DefaultSegmentDuration = 4 * time.Second
	DefaultMaxUpload       = 8 << 30
	DefaultReplicas        = 2
	// indexCacheSize is how many assets' indexes a node keeps.
	indexCacheSize = 64
)

// ErrBadName is returned for a name that cannot be an asset's.
var ErrBadName = errors.New("vod: invalid asset name: use 1 to 128 letters, digits, '_', '-' or '.', not starting with '.'")

// ErrNotFound answers for an asset no node has.
var ErrNotFound = errors.New("vod: no such asset")

// exts are the containers the library holds, in the order a name is
// looked up.
var exts = []Kind{KindMP4, KindFLV}

// Asset describes one asset of the library.
type Asset struct {
	Name     string    `json:"name"` // without the extension
	Kind     Kind      `json:"kind"` // the container of its file: mp4 or flv
	Size     int64     `json:"size"` // of its file
	Modified time.Time `json:"modified"`
	// Version changes whenever the file does; it is the same on every
	// node holding a copy.
	Version string `json:"version"`
	MP4     string `json:"mp4"` // its progressive download path
	HLS     string `json:"hls"` // its HLS playlist path
	File    string `json:"file,omitempty"`
	// Set by Info, which indexes the file.
	Duration float64 `json:"duration,omitempty"` // seconds
	MP4Size  int64   `json:"mp4_size,omitempty"` // of the MP4 served
	Video    bool    `json:"video,omitempty"`
	Audio    bool    `json:"audio,omitempty"`
}

// Config configures a Library.
type Config struct {
	// Stores hold the files, looked up in order. Uploads and copies from
	// other nodes go to the first, which may be nil (no uploads here).
	Stores []Storage
	// Cache keeps segments, playlists and the objects fetched from other
	// nodes. Required.
	Cache *cache.Cache
	// Meta keeps asset descriptions fetched from other nodes, briefly (its
	// TTL), so that a node learns of a replaced asset soon. Required with
	// Peers.
	Meta *cache.Cache
	// SegmentDuration is the shortest HLS segment; segments start at
	// keyframes. Defaults to DefaultSegmentDuration.
	SegmentDuration time.Duration
	// MaxUpload bounds an upload. Defaults to DefaultMaxUpload.
	MaxUpload int64
	// Peers are the other nodes of the cluster; nil for a single node.
	Peers Peers
	// Replicas is how many nodes own each asset. Defaults to
	// DefaultReplicas.
	Replicas int
	// Admin guards the endpoints that change the library. Required.
	Admin func(http.HandlerFunc) http.HandlerFunc
	// Active reports whether a file is still being written (a recording):
	// it is left out until finished. May be nil.
	Active func(file string) bool
	// Metrics registers the library's counters when set.
	Metrics prometheus.Registerer
	// Logger receives state changes. Defaults to slog.Default().
	Logger *slog.Logger
}

// Library is the on-demand library of a node.
type Library struct {
	cfg    Config
	log    *slog.Logger
	target int64 // segment duration in Clock ticks

	indexes *lru.Cache[string, *asset] // by name and version
	builds  singleflight.Group         // index builds in flight, by name and version

	served *prometheus.CounterVec

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // replications in flight
	ctx    context.Context
	cancel context.CancelFunc
}

// asset is an indexed file.
type asset struct {
	Asset
	index *Index
	segs  []segment

	once  sync.Once
	remux *remuxed // for FLV files, made on first use
	rerr  error
}

// New returns a library over cfg.Stores.
func New(cfg Config) (*Library, error) {
	if cfg.Cache == nil || cfg.Admin == nil {
		return nil, errors.New("vod: a cache and an admin guard are required")
	}
	if cfg.Peers != nil && cfg.Meta == nil {
		return nil, errors.New("vod: a cluster library needs a metadata cache")
	}
	if cfg.SegmentDuration <= 0 {
		cfg.SegmentDuration = DefaultSegmentDuration
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = DefaultMaxUpload
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	idx, err := lru.New[string, *asset](indexCacheSize)
	if err != nil {
		return nil, err
	}
	l := &Library{
		cfg:     cfg,
		log:     cfg.Logger,
		target:  int64(cfg.SegmentDuration / time.Millisecond * Clock / 1000),
		indexes: idx,
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshcast_vod_responses_total",
			Help: "On-demand responses by what was served (playlist, segment, mp4, flv, info) and where it came from (storage: this node's files; peer: another node, through the cache).",
		}, []string{"kind", "from"}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(l.served); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Close stops the copies to other nodes in flight and waits for them.
func (l *Library) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	return nil
}

// CheckName reports whether name (without extension) can name an asset.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen || name[0] == '.' {
		return ErrBadName
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ErrBadName
		}
	}
	return nil
}

// splitFile splits "NAME.EXT" of a container the library holds.
func splitFile(file string) (string, Kind, bool) {
	for _, k := range exts {
		if name, ok := strings.CutSuffix(file, "."+string(k)); ok && CheckName(name) == nil {
			return name, k, true
		}
	}
	return "", "", false
}

// version names a file's content as far as its size and time tell, the
// same on every node that holds a copy (copies keep the time).
func version(o Object) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d", o.Size, o.ModTime.Unix())
	return strconv.FormatUint(h.Sum64(), 36)
}

// describe makes the listing entry of a stored object.
func describe(name string, k Kind, o Object) Asset {
	return Asset{
		Name: name, Kind: k, Size: o.Size, Modified: o.ModTime.UTC(), Version: version(o),
		MP4: "/vod/" + name + ".mp4", HLS: "/vod/" + name + "/index.m3u8", File: "/vod/" + o.Name,
	}
}

// List returns the assets this node holds, by name. When two stores hold
// a name, or a name exists as both MP4 and FLV, the first found wins, as
// in lookups.
func (l *Library) List(ctx context.Context) ([]Asset, error) {
	seen := map[string]bool{}
	out := []Asset{}
	for _, s := range l.cfg.Stores {
		if s == nil {
			continue
		}
		objs, err := s.List(ctx)
		if err != nil {
			return nil, err
		}
		sort.Slice(objs, func(i, j int) bool { return objs[i].Name < objs[j].Name }) // .flv after .mp4 of a name
		for _, o := range objs {
			name, k, ok := splitFile(o.Name)
			if !ok || seen[name] || l.active(o.Name) {
				continue
			}
			seen[name] = true
			out = append(out, describe(name, k, o))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (l *Library) active(file string) bool { return l.cfg.Active != nil && l.cfg.Active(file) }

// find looks name up in the stores: the store, the object and its kind.
func (l *Library) find(ctx context.Context, name string) (Storage, Object, Kind, error) {
	if err := CheckName(name); err != nil {
		return nil, Object{}, "", err
	}
	for _, s := range l.cfg.Stores {
		if s == nil {
			continue
		}
		for _, k := range exts {
			file := name + "." + string(k)
			o, err := s.Stat(ctx, file)
			if err == nil && !l.active(file) {
				return s, o, k, nil
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, Object{}, "", err
			}
		}
	}
	return nil, Object{}, "", ErrNotFound
}

// open indexes name's file, or takes its index from memory.
func (l *Library) open(ctx context.Context, name string) (*asset, Storage, error) {
	s, o, k, err := l.find(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	key := name + "/" + version(o)
	if a, ok := l.indexes.Get(key); ok {
		return a, s, nil
	}
	v, err, _ := l.builds.Do(key, func() (any, error) {
		f, o, err := s.Open(ctx, o.Name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		x, err := BuildIndex(k, f, o.Size)
		if err != nil {
			return nil, err
		}
		a := &asset{Asset: describe(name, k, o), index: x, segs: plan(x, l.target)}
		a.Duration = x.Duration().Seconds()
		a.Video, a.Audio = x.Video != nil, x.Audio != nil
		a.MP4Size = o.Size
		if k != KindMP4 {
			if rm, err := a.remuxed(); err == nil {
				a.MP4Size = rm.size
			}
		}
		l.indexes.Add(key, a)
		l.log.Debug("vod: indexed", "asset", name, "kind", k, "duration", x.Duration(), "segments", len(a.segs))
		return a, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return v.(*asset), s, nil
}

// remuxed lays the asset out as MP4, once.
func (a *asset) remuxed() (*remuxed, error) {
	a.once.Do(func() { a.remux, a.rerr = newRemuxed(a.index) })
	return a.remux, a.rerr
}
