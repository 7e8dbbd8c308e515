package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/meshcast/meshcast/internal/testutil"
)

func quietCache(b *testing.B, cfg Config) *Cache {
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return newCache(b, cfg)
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("/vod/movie-%d/1080p/seg-%05d.ts", i%7, i)
	}
	return keys
}

// BenchmarkGetHit is the hit path: 1000 stored segments, read in turn.
func BenchmarkGetHit(b *testing.B) {
	keys := benchKeys(1000)
	c := quietCache(b, Config{MaxBytes: 64 << 20})
	val := make([]byte, 4096)
	for _, k := range keys {
		c.Set(k, val, 0)
	}
	fetch := noFetch(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Get(bg, keys[i%len(keys)], fetch); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkGetHitParallel is the hit path from GOMAXPROCS goroutines.
func BenchmarkGetHitParallel(b *testing.B) {
	keys := benchKeys(1000)
	c := quietCache(b, Config{MaxBytes: 64 << 20, TTL: 1 << 40})
	val := make([]byte, 4096)
	for _, k := range keys {
		c.Set(k, val, 1<<40)
	}
	fetch := noFetch(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			if _, err := c.Get(bg, keys[i%len(keys)], fetch); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkMixedParallel draws 20,000 keys of 16 KiB from a Zipf law
// (popular segments are asked most) into a cache that holds a quarter of
// them, with a TTL: hits, misses, coalesced misses and evictions mixed.
// The fetch costs nothing, so this measures the cache's own work.
func BenchmarkMixedParallel(b *testing.B) {
	keys := benchKeys(20_000)
	const size = 16 << 10
	c := quietCache(b, Config{MaxBytes: int64(len(keys)) / 4 * (size + EntryOverhead + 40), TTL: 1 << 40})
	val := make([]byte, size)
	fetch := func(context.Context) ([]byte, error) { return val, nil }
	var seed atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := seed.Add(1)
		zipf := rand.NewZipf(rand.New(rand.NewPCG(s, s)), 1.1, 1, uint64(len(keys)-1))
		for pb.Next() {
			if _, err := c.Get(bg, keys[zipf.Uint64()], fetch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	s := c.Stats()
	b.ReportMetric(float64(s.Hits)/float64(s.Hits+s.Misses)*100, "hit%")
}

// BenchmarkL2Hit serves every Get from a real L2: the values are too large
// for the cache's memory, so each Get asks the store.
func BenchmarkL2Hit(b *testing.B) {
	for _, srv := range []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"redis", func(b *testing.B) string { return testutil.StartRedis(b, 0).URL() }},
		{"memcached", func(b *testing.B) string {
			port := testutil.FreePort(b)
			testutil.StartMemcached(b, port)
			return fmt.Sprintf("memcached://127.0.0.1:%d", port)
		}},
	} {
		for _, size := range []int{1 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", srv.name, size>>10), func(b *testing.B) {
				url := srv.start(b)
				l2, err := NewL2(url, L2Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer l2.Close()
				c := quietCache(b, Config{MaxBytes: int64(size), L2: l2}) // MaxObjectBytes size/8
				if _, err := c.Get(bg, "k", func(context.Context) ([]byte, error) { return make([]byte, size), nil }); err != nil {
					b.Fatal(err)
				}
				c.Close()
				fetch := noFetch(b)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.Get(bg, "k", fetch); err != nil {
						b.Fatal(err)
					}
				}
				if s := c.Stats(); s.Fetches != 1 || s.L2Errors != 0 {
					b.Fatalf("Stats = %+v", s)
				}
			})
		}
	}
}
