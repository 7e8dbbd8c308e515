package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// L2 is a second-level cache shared by the nodes of a cluster: Redis or
// Memcached (NewL2). A Cache asks it before fetching and fills it after a
// fetch; it takes every error as a miss. Implementations bound every call
// by a timeout of their own and are safe for concurrent use.
type L2 interface {
	// Get returns the value stored under key; ok is false if there is none.
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Set stores value under key for ttl; zero means until the store
	// evicts it. A value above the backend's size limit is not stored, and
	// Set returns nil.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Close releases the connections.
	Close() error
}

// L2Options are the settings of NewL2 that are not the store's address.
type L2Options struct {
	// Prefix starts every key in the store, so that several caches (and
	// clusters) can share one. Empty means DefaultL2Prefix. Memcached
	// needs it printable ASCII without spaces, at most 100 bytes.
	Prefix string
	// Timeout bounds every call, dial included. Zero or negative means
	// DefaultL2Timeout.
	Timeout time.Duration
}

// DefaultL2Prefix is L2Options.Prefix when none is given.
const DefaultL2Prefix = "meshcast:cache:"

// DefaultL2Timeout is L2Options.Timeout when none is given: enough for a
// value of several megabytes on a local network.
const DefaultL2Timeout = time.Second

// Size limits of the values written to an L2, the L2 header included; the
// URL's max_value option sets another.
const (
	// DefaultRedisMaxValue keeps multi-megabyte video segments and stays
	// far below Redis's 512 MB, whose transfer would stall the server.
	DefaultRedisMaxValue = 16 << 20
	// DefaultMemcachedMaxValue fits memcached's default item size limit
	// (-I 1m), which also holds the key (up to 250 bytes) and the item
	// header.
	DefaultMemcachedMaxValue = 1<<20 - 1024
)

const defaultMemcachedPort = "11211"

// NewL2 opens the second-level cache at rawURL:
//
//	redis://[user:password@]host[:port][/db][?options]   a Redis server (port 6379)
//	rediss://...                                       the same over TLS
//	memcached://host[:port][,host[:port]...][?options]  Memcached servers (port 11211),
//	                                                   keys spread over them by hash
//
// Options: max_value=BYTES, the largest value written (default
// DefaultRedisMaxValue or DefaultMemcachedMaxValue; set it to match
// memcached's -I). Redis URLs also take go-redis's options (dial_timeout,
// pool_size, ...); memcached URLs take max_idle_conns=N, the idle
// connections kept per server (default 16).
//
// NewL2 only checks the URL: the store may be down, and calls fail until
// it is up (the Cache takes that as misses). Memcached host names are
// resolved when a connection is dialled. Errors never quote the URL: it
// may hold a password.
func NewL2(rawURL string, opts L2Options) (L2, error) {
	cfg, err := parseL2URL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cache: L2 url: %w", err)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultL2Prefix
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultL2Timeout
	}
	switch cfg.scheme {
	case "memcached":
		if len(opts.Prefix) > maxMemcachedPrefix || !memcachedLegal(opts.Prefix) {
			return nil, fmt.Errorf("cache: L2 prefix %q is not a memcached key of at most %d printable bytes", opts.Prefix, maxMemcachedPrefix)
		}
		return newMemcached(cfg, opts), nil
	default:
		return newRedis(cfg, opts), nil
	}
}

// l2URL is a parsed L2 URL.
type l2URL struct {
	scheme   string
	maxValue int
	// Redis: the URL without our options, for redis.ParseURL.
	redisURL string
	// Memcached: host:port of every server; max_idle_conns.
	addrs        []string
	maxIdleConns int
}

// parseL2URL reads rawURL, without quoting it in errors.
func parseL2URL(rawURL string) (*l2URL, error) {
	if rawURL == "" {
		return nil, errors.New("empty")
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, errors.New("not of the form redis://host:port/db or memcached://host:port")
	}
	// The authority runs to the path, query or fragment.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	u, err := url.Parse(scheme + "://host" + tail)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.Error() repeats the URL
		}
		return nil, err
	}
	if u.Fragment != "" || strings.Contains(tail, "#") {
		return nil, errors.New("fragment (#...) not allowed")
	}
	q := u.Query()
	cfg := &l2URL{scheme: scheme}
	switch scheme {
	case "redis", "rediss":
		cfg.maxValue = DefaultRedisMaxValue
	case "memcached":
		cfg.maxValue = DefaultMemcachedMaxValue
	default:
		return nil, fmt.Errorf("scheme %q is not redis, rediss or memcached", scheme)
	}
	if q.Has("max_value") {
		n, err := strconv.Atoi(q.Get("max_value"))
		if err != nil || n <= l2HeaderLen {
			return nil, fmt.Errorf("max_value %q is not a number of bytes above %d", q.Get("max_value"), l2HeaderLen)
		}
		cfg.maxValue = n
		q.Del("max_value")
	}

	hostPart := authority
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		hostPart = authority[at+1:]
	}
	if hostPart == "" {
		return nil, errors.New("no host")
	}

	if scheme != "memcached" {
		if strings.Contains(hostPart, ",") {
			return nil, errors.New("host lists (Redis Cluster, Sentinel) are not supported: give one server")
		}
		if u.Path != "" && u.Path != "/" {
			if _, err := strconv.Atoi(strings.TrimPrefix(u.Path, "/")); err != nil {
				return nil, fmt.Errorf("path %q is not a database number", u.Path)
			}
		}
		full, err := url.Parse(rawURL)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, err
		}
		full.RawQuery = q.Encode()
		cfg.redisURL = full.String()
		if _, err := redisOptions(cfg.redisURL); err != nil {
			return nil, err
		}
		return cfg, nil
	}

	if hostPart != authority {
		return nil, errors.New("memcached takes no user or password")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("path %q: memcached has no databases", u.Path)
	}
	cfg.maxIdleConns = 16
	if q.Has("max_idle_conns") {
		n, err := strconv.Atoi(q.Get("max_idle_conns"))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("max_idle_conns %q is not a positive number", q.Get("max_idle_conns"))
		}
		cfg.maxIdleConns = n
		q.Del("max_idle_conns")
	}
	for name := range q {
		return nil, fmt.Errorf("unknown option %q (memcached takes max_value and max_idle_conns)", name)
	}
	for host := range strings.SplitSeq(hostPart, ",") {
		if host == "" {
			return nil, errors.New("empty host in host list")
		}
		h, port, err := net.SplitHostPort(host)
		if err != nil {
			// No port: the default one.
			h, port = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), defaultMemcachedPort
			if strings.ContainsAny(h, "[]") || (strings.Contains(h, ":") && !strings.HasPrefix(host, "[")) {
				return nil, fmt.Errorf("host %q: bad address", host)
			}
		}
		if h == "" {
			return nil, fmt.Errorf("host %q: no host name", host)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("host %q: bad port", host)
		}
		cfg.addrs = append(cfg.addrs, net.JoinHostPort(h, port))
	}
	return cfg, nil
}

// The values an L2 holds start with a header: a magic byte, a version, and
// the value's expiry as big-endian unix milliseconds (0: none), so that a
// cache filled from the L2 keeps the expiry the writer gave the value.
const (
	l2Magic     = 0xCA
	l2Version   = 1
	l2HeaderLen = 10
)

// encodeL2 returns the L2 form of val, expiring at expires (unix
// nanoseconds; 0: never).
func encodeL2(val []byte, expires int64) []byte {
	b := make([]byte, l2HeaderLen+len(val))
	b[0], b[1] = l2Magic, l2Version
	var ms int64
	if expires != 0 {
		// Rounded up to a millisecond, so never 0.
		ms = (expires + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	}
	binary.BigEndian.PutUint64(b[2:], uint64(ms))
	copy(b[l2HeaderLen:], val)
	return b
}

// decodeL2 reads a value of encodeL2. The value shares b's array.
func decodeL2(b []byte) (val []byte, expires int64, err error) {
	if len(b) < l2HeaderLen || b[0] != l2Magic {
		return nil, 0, errors.New("not a cache value")
	}
	if b[1] != l2Version {
		return nil, 0, fmt.Errorf("cache value of version %d, not %d", b[1], l2Version)
	}
	ms := int64(binary.BigEndian.Uint64(b[2:]))
	if ms < 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return nil, 0, errors.New("cache value with a bad expiry")
	}
	return b[l2HeaderLen:], ms * int64(time.Millisecond), nil
}
