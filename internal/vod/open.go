package vod

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cache"
)

// metaCacheSize and metaTTL bound the cache of asset descriptions fetched
// from other nodes: a replaced asset is noticed within metaTTL.
const (
	metaCacheSize = 4 << 20
	metaTTL       = 10 * time.Second
)

// OpenConfig configures Open. Its errors name the flags of the settings
// at fault.
type OpenConfig struct {
	// UploadDir is the directory uploads and copies from other nodes go
	// to (--vod-dir); empty takes none here.
	UploadDir string
	// Dirs are further directories served as they are: the recordings.
	Dirs []string
	// CacheBytes bounds the cache of segments, playlists and objects from
	// other nodes (--cache-size).
	CacheBytes int64
	// CacheL2 is the URL of a second-level cache the nodes share
	// (--cache-l2); empty: none.
	CacheL2 string
	// Library configures the library; Open sets its Stores, Cache and
	// Meta, and registers the caches' collectors on its Metrics.
	Library Config
}

// Service is a node's on-demand library, with the directories and caches
// Open made for it, all closed together.
type Service struct {
	*Library
	dirs  []*Dir
	cache *cache.Cache
	meta  *cache.Cache
	l2    cache.L2
}

// Open builds the on-demand library over cfg's directories, with its
// caches. Without any directory the library is empty and says so to
// uploads.
func Open(cfg OpenConfig) (*Service, error) {
	s := &Service{}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	lc := cfg.Library
	lc.Stores = []Storage{nil} // uploads go to UploadDir, when set
	if cfg.UploadDir != "" {
		d, err := OpenDir(cfg.UploadDir)
		if err != nil {
			return nil, fmt.Errorf("--vod-dir: %w", err)
		}
		s.dirs = append(s.dirs, d)
		lc.Stores[0] = d
	}
	for _, dir := range cfg.Dirs {
		d, err := OpenDir(dir)
		if err != nil {
			return nil, err
		}
		s.dirs = append(s.dirs, d)
		lc.Stores = append(lc.Stores, d)
	}
	if err := s.openCaches(cfg, lc.Metrics); err != nil {
		return nil, err
	}
	lc.Cache, lc.Meta = s.cache, s.meta
	var err error
	if s.Library, err = New(lc); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// openCaches makes the media and description caches, over the shared
// second level if there is one, and registers their collectors on reg.
func (s *Service) openCaches(cfg OpenConfig, reg prometheus.Registerer) error {
	if cfg.CacheL2 != "" {
		l2, err := cache.NewL2(cfg.CacheL2, cache.L2Options{})
		if err != nil {
			return fmt.Errorf("--cache-l2: %w", err)
		}
		s.l2 = l2
	}
	var err error
	log := cfg.Library.Logger
	s.cache, err = cache.New(cache.Config{MaxBytes: cfg.CacheBytes, L2: s.l2, MetricsLabels: prometheus.Labels{"cache": "vod"}, Logger: log})
	if err != nil {
		return err
	}
	s.meta, err = cache.New(cache.Config{MaxBytes: metaCacheSize, TTL: metaTTL, L2: s.l2, MetricsLabels: prometheus.Labels{"cache": "vod_meta"}, Logger: log})
	if err != nil {
		return err
	}
	if reg != nil {
		if err := reg.Register(s.cache.Collector()); err != nil {
			return err
		}
		if err := reg.Register(s.meta.Collector()); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the library, its caches and its directories.
func (s *Service) Close() error {
	if s == nil {
		return nil
	}
	if s.Library != nil {
		s.Library.Close()
	}
	for _, c := range []*cache.Cache{s.cache, s.meta} {
		if c != nil {
			c.Close()
		}
	}
	if s.l2 != nil {
		s.l2.Close()
	}
	for _, d := range s.dirs {
		d.Close()
	}
	return nil
}
