package cache

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// memcachedL2 is an L2 on Memcached servers (ASCII protocol), keys spread
// over them by a CRC-32 of the key, as gomemcache's own ServerList does.
type memcachedL2 struct {
	client   *memcache.Client
	prefix   string
	maxValue int
}

// Memcached keys are at most 250 bytes of printable ASCII without spaces.
// A cache key that does not fit, after the prefix, is replaced by '#' and
// the base64 of its SHA-256; cache keys that start with '#' are too, so
// that the two forms never meet.
const (
	maxMemcachedKey    = 250
	maxMemcachedPrefix = 100 // leaves room for '#' and 43 bytes of hash
)

func newMemcached(cfg *l2URL, o L2Options) *memcachedL2 {
	servers := make(memcachedServers, len(cfg.addrs))
	for i, a := range cfg.addrs {
		servers[i] = memcachedAddr(a)
	}
	client := memcache.NewFromSelector(servers)
	// gomemcache's timeout bounds the dial and each read and write on a
	// connection; it has no contexts.
	client.Timeout = o.Timeout
	client.MaxIdleConns = cfg.maxIdleConns
	return &memcachedL2{client: client, prefix: o.Prefix, maxValue: cfg.maxValue}
}

// key maps a cache key onto a legal memcached key.
func (m *memcachedL2) key(key string) string {
	if len(m.prefix)+len(key) <= maxMemcachedKey && !strings.HasPrefix(key, "#") && memcachedLegal(key) {
		return m.prefix + key
	}
	sum := sha256.Sum256([]byte(key))
	return m.prefix + "#" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// memcachedLegal tells whether s is printable ASCII without spaces.
func memcachedLegal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Get implements L2.
func (m *memcachedL2) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	it, err := m.client.Get(m.key(key))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("memcached get: %w", err)
	}
	return it.Value, true, nil
}

// Set implements L2.
func (m *memcachedL2) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if len(value) > m.maxValue {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := m.client.Set(&memcache.Item{Key: m.key(key), Value: value, Expiration: memcachedExpiration(ttl, time.Now())})
	if err != nil {
		return fmt.Errorf("memcached set: %w", err)
	}
	return nil
}

// maxValueBytes is the largest value Set stores.
func (m *memcachedL2) maxValueBytes() int { return m.maxValue }

// Close implements L2.
func (m *memcachedL2) Close() error { return m.client.Close() }

// memcachedExpiration is memcached's exptime for ttl: whole seconds,
// rounded up; past 30 days memcached reads it as a unix time.
func memcachedExpiration(ttl time.Duration, now time.Time) int32 {
	if ttl <= 0 {
		return 0
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	const relativeMax = 30 * 24 * 60 * 60
	if secs <= relativeMax {
		return int32(secs)
	}
	at := now.Unix() + secs
	if at > 1<<31-1 {
		return 0 // beyond 2038: no expiry
	}
	return int32(at)
}

// memcachedServers selects a server by a CRC-32 of the key. Unlike
// gomemcache's ServerList it resolves names when dialling, not once when
// the list is made, so a node starts before its memcached is resolvable.
type memcachedServers []memcachedAddr

// memcachedAddr is a server's host:port, a net.Addr that dials by name.
type memcachedAddr string

func (a memcachedAddr) Network() string { return "tcp" }
func (a memcachedAddr) String() string  { return string(a) }

func (s memcachedServers) PickServer(key string) (net.Addr, error) {
	if len(s) == 1 {
		return s[0], nil
	}
	return s[crc32.ChecksumIEEE([]byte(key))%uint32(len(s))], nil
}

func (s memcachedServers) Each(f func(net.Addr) error) error {
	for _, a := range s {
		if err := f(a); err != nil {
			return err
		}
	}
	return nil
}
