// Package cache keeps byte objects (VOD segments, files fetched from the
// node that owns them) in memory near the viewers, so that a popular
// object costs one origin fetch however many viewers ask for it.
//
// A Cache is bounded in bytes and evicts the least recently used entries
// over all keys; entries may carry a TTL. Get coalesces misses: however
// many callers miss one key at once, one fetch runs (like nginx's
// proxy_cache_lock) and every waiter gets its result. An optional second
// level (L2, see NewL2) shared by the nodes of a cluster, Redis or
// Memcached, is asked before fetching and filled after a fetch.
//
// # Memory accounting
//
// An entry costs len(key) + len(value) + EntryOverhead bytes, and the sum
// of the costs of the stored entries never exceeds Config.MaxBytes.
// EntryOverhead covers the bookkeeping of an entry (the LRU list element,
// the map slot, the entry record) on 64-bit platforms. A value whose
// backing array is more than an eighth larger than the value is copied to
// a right-sized one before it is stored, so spare capacity does not hide
// from the bound. Expired entries are dropped when they are next looked
// up, or evicted as the least recently used: until then they still count.
//
// # Sharing
//
// Values are shared, not copied: a value returned by Get or Peek is the
// cache's own, and a value given to Set or returned by a fetch becomes the
// cache's. Nobody may modify them.
//
// # Implementation
//
// The recency list and index are github.com/hashicorp/golang-lru/v2's
// simplelru.LRU, a small, well-tested generic map plus list, used with an
// unbounded entry count: the byte bound and the expiry are this package's,
// which evicts with RemoveOldest until the bytes fit. One mutex guards it;
// a hit is a map lookup and a list move, far shorter than the network
// write of the value it serves. The coalescing is this package's too,
// rather than x/sync/singleflight's, because a waiter that gives up must
// be able to leave without cancelling the fetch for the others, and the
// fetch should be cancelled once nobody waits for it.
package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
)

// EntryOverhead is the bytes an entry costs on top of its key and value.
const EntryOverhead = 160

// Config configures a Cache. Only MaxBytes is required.
type Config struct {
	// MaxBytes bounds the sum of the costs of the stored entries
	// (len(key) + len(value) + EntryOverhead each). Must be positive.
	MaxBytes int64
	// MaxObjectBytes is the largest value stored: a larger one is returned
	// to the callers (and written to the L2, up to the L2's own limit) but
	// not kept in memory. Zero or negative means MaxBytes/8, so that one
	// object never flushes most of the cache. Whatever its setting, a value
	// whose cost exceeds MaxBytes is not stored.
	MaxObjectBytes int64
	// TTL is how long a value that Get fetched stays fresh, here and in the
	// L2. Zero or negative: until evicted. Values Get takes from the L2 keep
	// the expiry their writer gave them.
	TTL time.Duration
	// L2 is an optional second level shared by several nodes (NewL2). The
	// cache does not close it: close it after every cache that uses it.
	L2 L2
	// MetricsPrefix starts the names of the series of Collector. Empty
	// means "meshcast_cache".
	MetricsPrefix string
	// MetricsLabels are constant labels of every series of Collector, such
	// as {"cache": "vod"} to tell several caches apart.
	MetricsLabels prometheus.Labels
	// Logger logs L2 failures (at most one line per LogInterval) and
	// panicking fetches. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultMetricsPrefix is Config.MetricsPrefix when none is given.
const DefaultMetricsPrefix = "meshcast_cache"

// LogInterval is the shortest time between two log lines about L2 failures
// of one cache; the lines in between are counted in the next one.
const LogInterval = 10 * time.Second

// DefaultL2Backoff is how long a cache leaves its L2 alone after a failed
// call, so that an L2 that is down or slow costs one timeout per backoff
// rather than one per miss.
const DefaultL2Backoff = time.Second

// Stats are a cache's counters since New and its current size.
type Stats struct {
	Hits      uint64 // Get calls served from memory
	Misses    uint64 // Get calls not served from memory
	Coalesced uint64 // misses that waited for another caller's lookup
	// Fetches counts calls of Get's fetch function: misses that were
	// neither coalesced nor found in the L2.
	Fetches     uint64
	FetchErrors uint64 // fetches that failed (or panicked)
	Evictions   uint64 // entries dropped to make room, expired ones included
	TooLarge    uint64 // values returned but not stored for their size
	L2Hits      uint64 // L2 lookups that found a value
	L2Misses    uint64 // L2 lookups that found none
	// L2Errors counts failed L2 calls (lookups and writes), and lookups and
	// writes skipped because the L2 failed within the last backoff period.
	L2Errors uint64
	Entries  int   // entries stored, expired ones not yet dropped included
	Bytes    int64 // their cost
	MaxBytes int64 // Config.MaxBytes
}

// Cache is an in-memory LRU cache of byte objects, safe for concurrent use.
type Cache struct {
	maxBytes  int64
	maxObject int64
	ttl       time.Duration
	l2        L2
	log       *slog.Logger
	metrics   *collector

	mu    sync.Mutex
	lru   *simplelru.LRU[string, *entry]
	bytes int64
	calls map[string]*call // lookups in flight

	// running counts the goroutines of lookups in flight; idle is
	// signalled (with mu) when it drops to zero.
	running int
	idle    *sync.Cond

	l2Backoff time.Duration // DefaultL2Backoff; shorter in tests
	l2RetryAt atomic.Int64  // unix nanoseconds before which the L2 is skipped
	l2Down    atomic.Bool   // the last L2 call failed
	l2Log     rateLog

	hits, misses, coalesced, fetches, fetchErrors, evictions, tooLarge atomic.Uint64
	l2Hits, l2Misses, l2Errors                                         atomic.Uint64
}

// entry is a stored value.
type entry struct {
	val     []byte
	expires int64 // unix nanoseconds; 0: never
	cost    int64
}

// call is a lookup in flight: the L2, then the fetch.
type call struct {
	done   chan struct{} // closed when val and err are set
	val    []byte
	err    error
	cancel context.CancelFunc

	// Guarded by Cache.mu.
	waiters   int  // callers waiting for done
	finished  bool // done is about to be closed
	abandoned bool // every waiter left: the lookup is cancelled
}

// New returns an empty cache.
func New(cfg Config) (*Cache, error) {
	if cfg.MaxBytes <= 0 {
		return nil, fmt.Errorf("cache: MaxBytes %d is not positive", cfg.MaxBytes)
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = cfg.MaxBytes / 8
	}
	if cfg.MetricsPrefix == "" {
		cfg.MetricsPrefix = DefaultMetricsPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// The entry count is unbounded: the bytes are.
	lru, err := simplelru.NewLRU[string, *entry](math.MaxInt, nil)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{
		maxBytes:  cfg.MaxBytes,
		maxObject: cfg.MaxObjectBytes,
		ttl:       cfg.TTL,
		l2:        cfg.L2,
		log:       cfg.Logger,
		lru:       lru,
		calls:     make(map[string]*call),
		l2Backoff: DefaultL2Backoff,
	}
	c.idle = sync.NewCond(&c.mu)
	c.metrics = newCollector(c, cfg.MetricsPrefix, cfg.MetricsLabels)
	return c, nil
}

// Get returns key's value: from memory, else from the L2, else from fetch,
// and stores what it found. Concurrent misses of one key share one lookup:
// the first starts it and the others wait for its result. The lookup (the
// L2 and fetch) runs on its own, with a context that carries the values of
// the first caller's ctx but not its deadline or cancellation: a caller
// whose ctx ends returns ctx.Err() at once and the others keep waiting.
// The lookup's context is cancelled when every waiter has left, and a
// later Get starts a new one.
//
// A fetch error is returned to every waiter of that lookup and not
// cached: the next Get fetches again. A fetch that panics fails with an
// error. An L2 failure is logged and taken as a miss; Get never returns
// one.
func (c *Cache) Get(ctx context.Context, key string, fetch func(context.Context) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if v, ok := c.lookupLocked(key); ok {
		c.mu.Unlock()
		c.hits.Add(1)
		return v, nil
	}
	c.misses.Add(1)
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	cl, ok := c.calls[key]
	if ok {
		cl.waiters++
		c.coalesced.Add(1)
	} else {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cl = &call{done: make(chan struct{}), cancel: cancel, waiters: 1}
		c.calls[key] = cl
		c.running++
		go c.run(lctx, key, cl, fetch)
	}
	c.mu.Unlock()

	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if cl.finished {
		// The result is in: better than an error.
		c.mu.Unlock()
		<-cl.done
		return cl.val, cl.err
	}
	cl.waiters--
	if cl.waiters == 0 {
		cl.abandoned = true
		delete(c.calls, key)
		cl.cancel()
	}
	c.mu.Unlock()
	return nil, ctx.Err()
}

// run looks key up in the L2, else fetches it, stores the value and hands
// it to the waiters of cl, then writes a fetched value to the L2.
func (c *Cache) run(ctx context.Context, key string, cl *call, fetch func(context.Context) ([]byte, error)) {
	defer func() {
		cl.cancel()
		c.mu.Lock()
		if c.running--; c.running == 0 {
			c.idle.Broadcast()
		}
		c.mu.Unlock()
	}()

	val, expires, found := c.l2Get(ctx, key)
	var err error
	if !found {
		if err = ctx.Err(); err == nil {
			c.fetches.Add(1)
			val, err = c.callFetch(ctx, key, fetch)
			if err == nil && c.ttl > 0 {
				expires = time.Now().Add(c.ttl).UnixNano()
			}
		}
	}

	c.mu.Lock()
	if c.calls[key] == cl {
		delete(c.calls, key)
	}
	cl.finished = true
	if err == nil {
		// An abandoned lookup's value is still good to keep.
		val = c.storeLocked(key, val, expires)
	} else if !cl.abandoned {
		c.fetchErrors.Add(1)
	}
	cl.val, cl.err = val, err
	c.mu.Unlock()
	close(cl.done)

	if err == nil && !found {
		// After the waiters have their value: they need not wait for it.
		c.l2Set(context.WithoutCancel(ctx), key, val, expires)
	}
}

// callFetch calls fetch, turning a panic into an error.
func (c *Cache) callFetch(ctx context.Context, key string, fetch func(context.Context) ([]byte, error)) (val []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("cache: fetch panicked", "key", key, "panic", r, "stack", string(debug.Stack()))
			val, err = nil, fmt.Errorf("cache: fetch of %q panicked: %v", key, r)
		}
	}()
	return fetch(ctx)
}

// Peek returns key's value if it is stored and fresh, without counting a
// hit or a miss and without making it the most recently used.
func (c *Cache) Peek(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Peek(key)
	if !ok || e.expired(time.Now()) {
		return nil, false
	}
	return e.val, true
}

// Set stores value under key in memory, for ttl (zero or negative: until
// evicted), replacing any value key had. A value too large to store (see
// Config.MaxObjectBytes) removes key's previous value. Set does not write
// to the L2, and a Get's fetch in flight for key stores its own result
// when it ends.
func (c *Cache) Set(key string, value []byte, ttl time.Duration) {
	var expires int64
	if ttl > 0 {
		expires = time.Now().Add(ttl).UnixNano()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.storeLocked(key, value, expires)
}

// Delete removes key's value from memory and tells whether there was one.
// It does not reach the L2 (or other nodes), and a Get's fetch in flight
// for key stores its result when it ends.
func (c *Cache) Delete(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removeLocked(key)
}

// Stats returns the cache's counters and size.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	entries, b := c.lru.Len(), c.bytes
	c.mu.Unlock()
	return Stats{
		Hits:        c.hits.Load(),
		Misses:      c.misses.Load(),
		Coalesced:   c.coalesced.Load(),
		Fetches:     c.fetches.Load(),
		FetchErrors: c.fetchErrors.Load(),
		Evictions:   c.evictions.Load(),
		TooLarge:    c.tooLarge.Load(),
		L2Hits:      c.l2Hits.Load(),
		L2Misses:    c.l2Misses.Load(),
		L2Errors:    c.l2Errors.Load(),
		Entries:     entries,
		Bytes:       b,
		MaxBytes:    c.maxBytes,
	}
}

// Close waits for the lookups in flight, whose callers may have left (their
// contexts are then cancelled), and for their writes to the L2, bounded by
// the L2's timeout. The cache still works after Close; Close does not
// close the L2.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.running > 0 {
		c.idle.Wait()
	}
	return nil
}

// lookupLocked returns key's fresh value and makes it the most recently
// used; an expired value is dropped.
func (c *Cache) lookupLocked(key string) ([]byte, bool) {
	e, ok := c.lru.Get(key)
	if !ok {
		return nil, false
	}
	if e.expires != 0 && e.expired(time.Now()) {
		c.removeLocked(key)
		return nil, false
	}
	return e.val, true
}

// storeLocked stores val under key unless it is too large, evicting the
// least recently used entries to make room, and returns the value as
// stored (right-sized).
func (c *Cache) storeLocked(key string, val []byte, expires int64) []byte {
	cost := int64(len(key)) + int64(len(val)) + EntryOverhead
	if int64(len(val)) > c.maxObject || cost > c.maxBytes {
		c.tooLarge.Add(1)
		c.removeLocked(key) // stale now
		return val
	}
	if spare := cap(val) - len(val); spare > len(val)/8 {
		val = bytes.Clone(val)
	}
	c.removeLocked(key)
	c.lru.Add(key, &entry{val: val, expires: expires, cost: cost})
	c.bytes += cost
	for c.bytes > c.maxBytes {
		// The new entry is the most recently used and fits on its own:
		// it is never the oldest while the bytes exceed the bound.
		_, old, ok := c.lru.RemoveOldest()
		if !ok {
			break
		}
		c.bytes -= old.cost
		c.evictions.Add(1)
	}
	return val
}

// removeLocked drops key's entry.
func (c *Cache) removeLocked(key string) bool {
	e, ok := c.lru.Peek(key)
	if !ok {
		return false
	}
	c.lru.Remove(key)
	c.bytes -= e.cost
	return true
}

func (e *entry) expired(now time.Time) bool {
	return e.expires != 0 && now.UnixNano() >= e.expires
}

// l2Get looks key up in the L2. A failure counts as a miss.
func (c *Cache) l2Get(ctx context.Context, key string) (val []byte, expires int64, found bool) {
	if c.l2 == nil || !c.l2Usable() {
		return nil, 0, false
	}
	raw, ok, err := c.l2.Get(ctx, key)
	if err != nil {
		c.l2Failed(ctx, "get", key, err)
		return nil, 0, false
	}
	c.l2Up()
	if !ok {
		c.l2Misses.Add(1)
		return nil, 0, false
	}
	val, expires, err = decodeL2(raw)
	if err != nil {
		// Not a value of ours: count it, but the L2 works.
		c.l2Errors.Add(1)
		c.l2Logf("get", key, err)
		return nil, 0, false
	}
	if expires != 0 && time.Now().UnixNano() >= expires {
		c.l2Misses.Add(1)
		return nil, 0, false
	}
	c.l2Hits.Add(1)
	return val, expires, true
}

// l2Set writes val to the L2 until expires (0: no expiry). A failure is
// logged and counted.
func (c *Cache) l2Set(ctx context.Context, key string, val []byte, expires int64) {
	if c.l2 == nil {
		return
	}
	if l, ok := c.l2.(interface{ maxValueBytes() int }); ok && l2HeaderLen+len(val) > l.maxValueBytes() {
		return // not worth the copy encodeL2 makes
	}
	if !c.l2Usable() {
		return
	}
	var ttl time.Duration
	if expires != 0 {
		ttl = time.Until(time.Unix(0, expires))
		if ttl <= 0 {
			return
		}
	}
	if err := c.l2.Set(ctx, key, encodeL2(val, expires), ttl); err != nil {
		c.l2Failed(ctx, "set", key, err)
		return
	}
	c.l2Up()
}

// l2Usable tells whether the L2 may be called: it has not failed within
// the backoff period. A skipped call counts as an error.
func (c *Cache) l2Usable() bool {
	if at := c.l2RetryAt.Load(); at != 0 && time.Now().UnixNano() < at {
		c.l2Errors.Add(1)
		return false
	}
	return true
}

// l2Failed counts and logs a failed L2 call and starts a backoff period,
// unless the call failed because its lookup was abandoned.
func (c *Cache) l2Failed(ctx context.Context, op, key string, err error) {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return
	}
	c.l2Errors.Add(1)
	c.l2Down.Store(true)
	c.l2RetryAt.Store(time.Now().Add(c.l2Backoff).UnixNano())
	c.l2Logf(op, key, err)
}

// l2Up notes a successful L2 call, logging the L2's return.
func (c *Cache) l2Up() {
	if c.l2Down.Load() && c.l2Down.CompareAndSwap(true, false) {
		c.l2RetryAt.Store(0)
		c.log.Info("cache: L2 works again")
	}
}

func (c *Cache) l2Logf(op, key string, err error) {
	if ok, dropped := c.l2Log.allow(time.Now()); ok {
		c.log.Warn("cache: L2 "+op+" failed; going on without it", "key", key, "err", err, "unlogged", dropped)
	}
}

// rateLog lets one log line through per LogInterval.
type rateLog struct {
	mu      sync.Mutex
	next    time.Time
	dropped int
}

// allow tells whether a line may be logged now, and how many were not
// since the last one.
func (r *rateLog) allow(now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.next) {
		r.dropped++
		return false, 0
	}
	dropped := r.dropped
	r.next, r.dropped = now.Add(LogInterval), 0
	return true, dropped
}
