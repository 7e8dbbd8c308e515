package cache

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshcast/meshcast/internal/testutil"
)

func TestParseL2URL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want string // error substring; empty: valid
	}{
		{"", "empty"},
		{"localhost:6379", "not of the form"},
		{"http://h:1", `scheme "http" is not redis, rediss or memcached`},
		{"redis://", "no host"},
		{"redis:///0", "no host"},
		{"redis://user:pw@/0", "no host"},
		{"redis://h1:6379,h2:6379", "host lists (Redis Cluster, Sentinel) are not supported"},
		{"redis://h:6379/x", `path "/x" is not a database number`},
		{"redis://h:6379/0/1", `is not a database number`},
		{"redis://h:6379/0?foo=1", "unexpected option: foo"},
		{"redis://h:6379/0?max_value=-1", `max_value "-1" is not a number of bytes`},
		{"redis://h:6379/0?max_value=10", `max_value "10" is not a number of bytes above 10`},
		{"redis://h:6379/0?max_value=1MB", `max_value "1MB"`},
		{"redis://h:6379/0#frag", "fragment"},
		{"redis://h:port/0", "invalid port"},
		{"memcached://", "no host"},
		{"memcached://u:p@h:11211", "memcached takes no user or password"},
		{"memcached://h:abc", `host "h:abc": bad port`},
		{"memcached://h:0", `host "h:0": bad port`},
		{"memcached://h:70000", "bad port"},
		{"memcached://h:1,,h:2", "empty host in host list"},
		{"memcached://:11211", "no host name"},
		{"memcached://::1", "bad address"},
		{"memcached://h:1/0", "memcached has no databases"},
		{"memcached://h:1?foo=1", `unknown option "foo"`},
		{"memcached://h:1?pool_size=1", `unknown option "pool_size"`},
		{"memcached://h:1?max_idle_conns=0", "max_idle_conns"},
		{"memcached://h:1?max_value=x", "max_value"},

		{"redis://127.0.0.1:6379/2", ""},
		{"redis://h", ""},
		{"redis://h:6379/", ""},
		{"rediss://user:pw@h:6380/0?dial_timeout=1s&max_value=1024", ""},
		{"redis://[::1]:6379/0?max_retries=2", ""},
		{"memcached://h", ""},
		{"memcached://h:11211/", ""},
		{"memcached://h1:1,[::1]:2,[::1]?max_value=2000000&max_idle_conns=4", ""},
	} {
		cfg, err := parseL2URL(tc.url)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.url, err)
		case tc.want != "" && err == nil:
			t.Errorf("%q: accepted (%+v), want an error with %q", tc.url, cfg, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%q: error %q, want one with %q", tc.url, err, tc.want)
		}
	}

	// Parsed values.
	cfg, err := parseL2URL("memcached://h1:1,[::1]:2,[::1],h3?max_value=2000000&max_idle_conns=4")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.addrs, " "); got != "h1:1 [::1]:2 [::1]:11211 h3:11211" || cfg.maxValue != 2000000 || cfg.maxIdleConns != 4 {
		t.Errorf("memcached: %+v", cfg)
	}
	cfg, err = parseL2URL("rediss://user:pw@h:6380/3?dial_timeout=2s&max_value=1024")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := redisOptions(cfg.redisURL)
	if err != nil || opts.Addr != "h:6380" || opts.DB != 3 || opts.Password != "pw" || opts.DialTimeout != 2*time.Second ||
		opts.TLSConfig == nil || cfg.maxValue != 1024 {
		t.Errorf("redis: %+v from %+v, %v", opts, cfg, err)
	}
	if cfg, _ := parseL2URL("redis://h"); cfg.maxValue != DefaultRedisMaxValue {
		t.Errorf("redis default max_value %d", cfg.maxValue)
	}

	// Errors never quote a password.
	for _, u := range []string{"redis://user:s3cret@h:x/0", "redis://user:s3cret@h:1/0?foo=1", "redis://user:s3cret@h:1/zz",
		"redis://user:s3cret@h:1,h:2", "memcached://user:s3cret@h", "redis://user:s3cret@h:1/0\x7f"} {
		if _, err := NewL2(u, L2Options{}); err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: %v", u, err)
		}
	}
	// A memcached prefix must be a legal key start.
	for _, p := range []string{"has space:", strings.Repeat("p", maxMemcachedPrefix+1), "tab\t"} {
		if _, err := NewL2("memcached://h", L2Options{Prefix: p}); err == nil {
			t.Errorf("memcached prefix %q accepted", p)
		}
	}
}

func TestL2Encoding(t *testing.T) {
	for _, tc := range []struct {
		val     []byte
		expires int64
		want    int64
	}{
		{nil, 0, 0},
		{[]byte("v"), 0, 0},
		{[]byte("v"), 1, int64(time.Millisecond)},
		{[]byte("value"), 1_700_000_000_123_000_000, 1_700_000_000_123_000_000},
		{[]byte("value"), 1_700_000_000_123_000_001, 1_700_000_000_124_000_000},
	} {
		val, expires, err := decodeL2(encodeL2(tc.val, tc.expires))
		if err != nil || !bytes.Equal(val, tc.val) || expires != tc.want {
			t.Errorf("round trip of %q, %d: %q, %d, %v", tc.val, tc.expires, val, expires, err)
		}
	}
	for _, b := range [][]byte{nil, []byte("short"), []byte("0123456789abc"),
		append([]byte{l2Magic, 9}, make([]byte, 8)...),
		append([]byte{l2Magic, l2Version}, bytes.Repeat([]byte{0xff}, 8)...)} {
		if _, _, err := decodeL2(b); err == nil {
			t.Errorf("decodeL2(%q) accepted", b)
		}
	}
}

func TestMemcachedKeys(t *testing.T) {
	m := &memcachedL2{prefix: "p:"}
	long := strings.Repeat("k", maxMemcachedKey-2)
	seen := map[string]string{}
	for _, k := range []string{"", "seg/1.ts", long, long + "k", "a b", "a\nb", "é", "#x", "\x7f", "dél"} {
		mk := m.key(k)
		if len(mk) > maxMemcachedKey || !memcachedLegal(mk) || !strings.HasPrefix(mk, "p:") {
			t.Errorf("key(%q) = %q: not a legal memcached key", k, mk)
		}
		if other, dup := seen[mk]; dup {
			t.Errorf("keys %q and %q both map to %q", k, other, mk)
		}
		seen[mk] = k
	}
	if m.key("seg/1.ts") != "p:seg/1.ts" || m.key(long) != "p:"+long {
		t.Error("legal keys are not kept as they are")
	}
}

func TestMemcachedExpiration(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		ttl  time.Duration
		want int32
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2},
		{30 * 24 * time.Hour, 30 * 24 * 3600},
		{30*24*time.Hour + time.Second, 1_700_000_000 + 30*24*3600 + 1},
		{100 * 365 * 24 * time.Hour, 0},
	} {
		if got := memcachedExpiration(tc.ttl, now); got != tc.want {
			t.Errorf("memcachedExpiration(%v) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
}

// An l2Server is a Redis or Memcached server of a test.
type l2Server struct {
	name     string
	start    func(t *testing.T, port int) (stop func())
	url      func(port int) string
	maxValue int // the largest value the test writes, header included
}

var l2Servers = []l2Server{
	{
		name: "redis",
		start: func(t *testing.T, port int) func() {
			r := testutil.StartRedis(t, port)
			return func() { r.Stop(t) }
		},
		url:      func(port int) string { return fmt.Sprintf("redis://127.0.0.1:%d/0?max_value=%d", port, 256<<10) },
		maxValue: 256 << 10,
	},
	{
		name: "memcached",
		start: func(t *testing.T, port int) func() {
			return testutil.StartMemcached(t, port).Kill // memcached takes a second to end on SIGTERM
		},
		// The default max_value, against the real item size limit.
		url:      func(port int) string { return fmt.Sprintf("memcached://127.0.0.1:%d", port) },
		maxValue: DefaultMemcachedMaxValue,
	},
}

// openL2 opens the L2 at url, closed when the test ends.
func openL2(t *testing.T, url, prefix string) L2 {
	t.Helper()
	l2, err := NewL2(url, L2Options{Prefix: prefix, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Close() })
	return l2
}

// TestL2 runs two caches, as on two nodes, on one real Redis or Memcached.
func TestL2(t *testing.T) {
	for _, srv := range l2Servers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			port := testutil.FreePort(t)
			srv.start(t, port)
			url := srv.url(port)
			const prefix = "t:"
			// Each node has its own client of the store.
			nodeA := func(cfg Config) *Cache { cfg.L2 = openL2(t, url, prefix); return newCache(t, cfg) }
			a := nodeA(Config{MaxBytes: 4 << 20, TTL: time.Hour})
			b := nodeA(Config{MaxBytes: 4 << 20})

			t.Run("shared", func(t *testing.T) {
				var calls atomic.Int64
				want := value("seg", 100_000)
				if v, err := a.Get(bg, "seg", fetcher("seg", 100_000, &calls)); err != nil || !bytes.Equal(v, want) {
					t.Fatalf("A: %d bytes, %v", len(v), err)
				}
				a.Close() // the L2 write is done
				if v, err := b.Get(bg, "seg", noFetch(t)); err != nil || !bytes.Equal(v, want) {
					t.Fatalf("B: %d bytes, %v", len(v), err)
				}
				if calls.Load() != 1 {
					t.Errorf("%d fetches, want 1", calls.Load())
				}
				if s := b.Stats(); s.L2Hits != 1 || s.Fetches != 0 || s.Entries != 1 {
					t.Errorf("B: %+v", s)
				}
				// B keeps A's expiry, not its own (none).
				b.mu.Lock()
				e, _ := b.lru.Peek("seg")
				b.mu.Unlock()
				if left := time.Until(time.Unix(0, e.expires)); left <= 59*time.Minute || left > time.Hour+time.Millisecond {
					t.Errorf("B's copy expires in %v, want A's hour", left)
				}
				if srv.name == "redis" {
					rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
					defer rdb.Close()
					if ttl, err := rdb.PTTL(bg, prefix+"seg").Result(); err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
						t.Errorf("Redis PTTL %v, %v; want about an hour", ttl, err)
					}
				}
			})

			t.Run("coalesced", func(t *testing.T) {
				if _, err := a.Get(bg, "pop", fetcher("pop", 1000, new(atomic.Int64))); err != nil {
					t.Fatal(err)
				}
				a.Close()
				c := nodeA(Config{MaxBytes: 1 << 20})
				var wg sync.WaitGroup
				for range 50 {
					wg.Go(func() {
						if _, err := c.Get(bg, "pop", noFetch(t)); err != nil {
							t.Error(err)
						}
					})
				}
				wg.Wait()
				if s := c.Stats(); s.L2Hits+s.L2Misses != 1 || s.L2Hits != 1 || s.Hits+s.Coalesced != 49 {
					t.Errorf("50 Gets: %+v; want one L2 lookup", s)
				}
			})

			t.Run("keys", func(t *testing.T) {
				keys := []string{"", "with space", "new\nline", "#hash", "ünï", strings.Repeat("k", 250-len(prefix)), strings.Repeat("long/", 400)}
				for _, k := range keys {
					if _, err := a.Get(bg, k, fetcher(k+"!", 64, new(atomic.Int64))); err != nil {
						t.Fatal(err)
					}
				}
				a.Close()
				c := nodeA(Config{MaxBytes: 1 << 20})
				for _, k := range keys {
					if v, err := c.Get(bg, k, noFetch(t)); err != nil || !bytes.Equal(v, value(k+"!", 64)) {
						t.Errorf("key %.20q: %q, %v", k, v, err)
					}
				}
				if s := c.Stats(); s.L2Errors != 0 || s.L2Hits != uint64(len(keys)) {
					t.Errorf("Stats = %+v", s)
				}
			})

			t.Run("size limit", func(t *testing.T) {
				// The largest value the store takes with the longest
				// key; one byte more is not written, and that is no error.
				key := strings.Repeat("m", 250-len(prefix))
				fits := srv.maxValue - l2HeaderLen
				for _, tc := range []struct {
					key    string
					size   int
					stored bool
				}{{key, fits, true}, {key + "2", fits + 1, false}} {
					if _, err := a.Get(bg, tc.key, fetcher(tc.key, tc.size, new(atomic.Int64))); err != nil {
						t.Fatal(err)
					}
					a.Close()
					c := nodeA(Config{MaxBytes: 8 << 20})
					var calls atomic.Int64
					v, err := c.Get(bg, tc.key, fetcher(tc.key, tc.size, &calls))
					if err != nil || len(v) != tc.size {
						t.Fatalf("%d bytes: %d, %v", tc.size, len(v), err)
					}
					if stored := calls.Load() == 0; stored != tc.stored {
						t.Errorf("value of %d bytes: stored %v, want %v", tc.size, stored, tc.stored)
					}
					if s := a.Stats(); s.L2Errors != 0 {
						t.Errorf("A: %+v", s)
					}
				}
			})

			t.Run("expired or foreign", func(t *testing.T) {
				l2 := openL2(t, url, prefix)
				past := time.Now().Add(-time.Second).UnixNano()
				if err := l2.Set(bg, "old", encodeL2([]byte("old"), past), time.Hour); err != nil {
					t.Fatal(err)
				}
				if err := l2.Set(bg, "foreign", []byte("not ours"), 0); err != nil {
					t.Fatal(err)
				}
				c := nodeA(Config{MaxBytes: 1 << 20})
				for _, k := range []string{"old", "foreign"} {
					if v, err := c.Get(bg, k, func(context.Context) ([]byte, error) { return []byte("fresh"), nil }); err != nil || string(v) != "fresh" {
						t.Errorf("%s: %q, %v", k, v, err)
					}
				}
				if s := c.Stats(); s.Fetches != 2 || s.L2Misses != 1 || s.L2Errors != 1 {
					t.Errorf("Stats = %+v", s)
				}
			})
		})
	}
}

// TestL2Down kills the store under a cache, which keeps working on its
// own, then restarts it: the cache uses it again after the backoff.
func TestL2Down(t *testing.T) {
	for _, srv := range l2Servers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			port := testutil.FreePort(t)
			stop := srv.start(t, port)
			url := srv.url(port)
			var logs testutil.LockedBuffer
			c := newCache(t, Config{MaxBytes: 1 << 20, L2: openL2(t, url, ""), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			c.l2Backoff = 100 * time.Millisecond

			var calls atomic.Int64
			get := func(key string) {
				t.Helper()
				if v, err := c.Get(bg, key, fetcher(key, 100, &calls)); err != nil || !bytes.Equal(v, value(key, 100)) {
					t.Fatalf("Get(%s): %q, %v", key, v, err)
				}
			}
			get("before")
			c.Close() // "before" is in the store
			stop()
			for i := range 20 {
				get(fmt.Sprintf("during-%d", i))
			}
			c.Close()
			if calls.Load() != 21 {
				t.Errorf("%d fetches, want 21", calls.Load())
			}
			s := c.Stats()
			// The first miss fails its lookup; the write of its value
			// and the next lookups are skipped or fail.
			if s.L2Errors < 21 || s.FetchErrors != 0 || s.L2Misses != 1 {
				t.Errorf("with the store down: %+v", s)
			}
			if n := strings.Count(logs.String(), "L2 get failed"); n != 1 {
				t.Errorf("%d log lines of failures within %v, want 1:\n%s", n, LogInterval, logs.String())
			}

			srv.start(t, port)
			time.Sleep(c.l2Backoff)
			get("after")
			c.Close()
			if !strings.Contains(logs.String(), "L2 works again") {
				t.Errorf("the store's return not logged:\n%s", logs.String())
			}
			// "after" went to the store.
			other := newCache(t, Config{MaxBytes: 1 << 20, L2: openL2(t, url, "")})
			if _, err := other.Get(bg, "after", noFetch(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestL2Hung puts the cache's L2 on a server that accepts connections but
// never answers: every lookup times out, after the backoff only one per
// backoff period costs the timeout, and Get never fails.
func TestL2Hung(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	done := make(chan struct{})
	conns.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				<-done
				c.Close()
			})
		}
	})
	defer func() { ln.Close(); close(done); conns.Wait() }()

	for _, scheme := range []string{"redis", "memcached"} {
		t.Run(scheme, func(t *testing.T) {
			const timeout = 100 * time.Millisecond
			l2, err := NewL2(fmt.Sprintf("%s://%s", scheme, ln.Addr()), L2Options{Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()
			c := newCache(t, Config{MaxBytes: 1 << 20, L2: l2})
			c.l2Backoff = time.Hour
			start := time.Now()
			if _, err := c.Get(bg, "a", fetcher("a", 10, new(atomic.Int64))); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < timeout || d > 20*timeout {
				t.Errorf("first Get took %v, want about the timeout %v", d, timeout)
			}
			start = time.Now()
			for i := range 10 {
				if _, err := c.Get(bg, fmt.Sprint("b", i), fetcher("b", 10, new(atomic.Int64))); err != nil {
					t.Fatal(err)
				}
			}
			if d := time.Since(start); d >= 10*timeout {
				t.Errorf("10 Gets with the L2 in backoff took %v: the L2 is not skipped", d)
			}
			c.Close()
			if s := c.Stats(); s.Fetches != 11 || s.L2Errors != 22 {
				t.Errorf("Stats = %+v; want 11 fetches, 1 failed and 21 skipped L2 calls", s)
			}
		})
	}
}
