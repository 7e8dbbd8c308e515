package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var bg = context.Background()

// newCache returns a cache of cfg, closed when the test ends, logging to
// the test's log.
func newCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// value returns n bytes derived from key.
func value(key string, n int) []byte {
	b := bytes.Repeat([]byte(key+"."), n/(len(key)+1)+1)
	return b[:n:n]
}

// fetcher returns a fetch of value(key, n) that counts its calls in n.
func fetcher(key string, size int, calls *atomic.Int64) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) {
		calls.Add(1)
		return value(key, size), nil
	}
}

func noFetch(t testing.TB) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) {
		t.Error("unexpected fetch")
		return nil, errors.New("unexpected fetch")
	}
}

func cost(key string, n int) int64 { return int64(len(key)+n) + EntryOverhead }

func TestNewRejectsNoBound(t *testing.T) {
	for _, max := range []int64{0, -1} {
		if _, err := New(Config{MaxBytes: max}); err == nil {
			t.Errorf("New(MaxBytes: %d) succeeded", max)
		}
	}
}

func TestGetStoresAndHits(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20})
	var calls atomic.Int64
	for i := range 3 {
		v, err := c.Get(bg, "a", fetcher("a", 100, &calls))
		if err != nil || !bytes.Equal(v, value("a", 100)) {
			t.Fatalf("Get #%d = %q, %v", i, v, err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("%d fetches, want 1", calls.Load())
	}
	s := c.Stats()
	want := Stats{Hits: 2, Misses: 1, Fetches: 1, Entries: 1, Bytes: cost("a", 100), MaxBytes: 1 << 20}
	if s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
}

func TestLRUOrder(t *testing.T) {
	const size = 1000
	// Room for three entries of size bytes.
	c := newCache(t, Config{MaxBytes: 3*cost("k0", size) + cost("k0", size)/2, MaxObjectBytes: 3 * size})
	for _, k := range []string{"k0", "k1", "k2"} {
		c.Set(k, value(k, size), 0)
	}
	// k0 is used, k1 only peeked at: k1 is the least recently used.
	if _, err := c.Get(bg, "k0", noFetch(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Peek("k1"); !ok {
		t.Fatal("k1 not stored")
	}
	c.Set("k3", value("k3", size), 0)
	present := func(k string) bool { _, ok := c.Peek(k); return ok }
	if present("k1") || !present("k0") || !present("k2") || !present("k3") {
		t.Errorf("after evicting one: k0 %v k1 %v k2 %v k3 %v, want k1 evicted",
			present("k0"), present("k1"), present("k2"), present("k3"))
	}
	// A replacement takes the new size: k2 grows to three entries' worth,
	// evicting the two others, oldest first.
	c.Set("k2", value("k2", 3*size), 0)
	if !present("k2") || present("k0") || present("k3") {
		t.Errorf("after growing k2: k0 %v k2 %v k3 %v, want only k2", present("k0"), present("k2"), present("k3"))
	}
	s := c.Stats()
	if s.Evictions != 3 || s.Entries != 1 || s.Bytes != cost("k2", 3*size) {
		t.Errorf("Stats = %+v, want 3 evictions, k2 alone", s)
	}
	if !c.Delete("k2") || c.Delete("k2") {
		t.Error("Delete does not report what it removed")
	}
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("empty cache: Stats = %+v", s)
	}
}

// TestByteBound loads many more bytes than the bound, in objects of random
// sizes under random keys, and checks the bound after every insert, both
// in Stats and in the series a Prometheus scrape reads.
func TestByteBound(t *testing.T) {
	const max = 256 << 10
	c := newCache(t, Config{MaxBytes: max, MetricsLabels: prometheus.Labels{"cache": "vod"}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c.Collector())
	rng := rand.New(rand.NewPCG(1, 2))
	var loaded int64
	for i := range 2000 {
		key := fmt.Sprintf("seg-%d", rng.IntN(500))
		size := rng.IntN(max / 6) // up to above MaxObjectBytes (max/8)
		if _, err := c.Get(bg, key, func(context.Context) ([]byte, error) { return value(key, size), nil }); err != nil {
			t.Fatal(err)
		}
		loaded += int64(size)
		s := c.Stats()
		if s.Bytes > max || s.Bytes < 0 {
			t.Fatalf("insert %d: %d bytes stored, bound %d", i, s.Bytes, max)
		}
		if i%10 == 0 {
			m := gather(t, reg)
			if m["meshcast_cache_bytes"] != float64(s.Bytes) || m["meshcast_cache_bytes"] > max {
				t.Fatalf("insert %d: meshcast_cache_bytes %v, Stats %d, bound %d", i, m["meshcast_cache_bytes"], s.Bytes, max)
			}
		}
	}
	if loaded < 10*max {
		t.Fatalf("loaded only %d bytes", loaded)
	}
	// The accounting adds up: Bytes is the cost of what is stored.
	var sum int64
	var n int
	for k := range 500 {
		key := fmt.Sprintf("seg-%d", k)
		if v, ok := c.Peek(key); ok {
			sum += cost(key, len(v))
			n++
		}
	}
	s := c.Stats()
	if s.Bytes != sum || s.Entries != n {
		t.Errorf("Stats say %d bytes in %d entries; the entries cost %d in %d", s.Bytes, s.Entries, sum, n)
	}
	if s.Evictions == 0 || s.TooLarge == 0 {
		t.Errorf("Stats = %+v: want evictions and values too large", s)
	}
	m := gather(t, reg)
	for name, want := range map[string]float64{
		"meshcast_cache_hits_total":      float64(s.Hits),
		"meshcast_cache_misses_total":    float64(s.Misses),
		"meshcast_cache_fetches_total":   float64(s.Fetches),
		"meshcast_cache_evictions_total": float64(s.Evictions),
		"meshcast_cache_too_large_total": float64(s.TooLarge),
		"meshcast_cache_entries":         float64(s.Entries),
		"meshcast_cache_max_bytes":       max,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
}

// gather scrapes reg: the value of every series by name, checking that
// each has the label cache="vod".
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if !hasLabel(m, "cache", "vod") {
				t.Errorf("%s lacks cache=\"vod\"", mf.GetName())
			}
			switch {
			case m.Counter != nil:
				out[mf.GetName()] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[mf.GetName()] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestMetricsPrefix(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20, MetricsPrefix: "edge_cache"})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 13 {
		t.Errorf("%d series, want 13", len(mfs))
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "edge_cache_") {
			t.Errorf("series %s", mf.GetName())
		}
	}
}

func TestTooLarge(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 8000}) // MaxObjectBytes 1000
	var calls atomic.Int64
	for range 2 {
		v, err := c.Get(bg, "big", fetcher("big", 1001, &calls))
		if err != nil || len(v) != 1001 {
			t.Fatalf("Get = %d bytes, %v", len(v), err)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("%d fetches of a value too large to store, want 2", calls.Load())
	}
	if _, ok := c.Peek("big"); ok {
		t.Error("value above MaxObjectBytes stored")
	}
	// The limit is inclusive.
	if _, err := c.Get(bg, "fits", fetcher("fits", 1000, &calls)); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Peek("fits"); !ok {
		t.Error("value of MaxObjectBytes not stored")
	}
	// A value too large for its key drops the key's previous value.
	c.Set("fits", value("x", 5000), 0)
	if _, ok := c.Peek("fits"); ok {
		t.Error("previous value survived a value too large")
	}
	if s := c.Stats(); s.TooLarge != 3 || s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("Stats = %+v", s)
	}

	// MaxObjectBytes above MaxBytes: a value whose cost exceeds MaxBytes is
	// still not stored.
	c2 := newCache(t, Config{MaxBytes: 1000, MaxObjectBytes: 5000})
	c2.Set("k", value("k", 1000-EntryOverhead), 0)
	if _, ok := c2.Peek("k"); ok {
		t.Error("value costing more than MaxBytes stored")
	}
	c2.Set("k", value("k", 1000-EntryOverhead-1), 0)
	if _, ok := c2.Peek("k"); !ok {
		t.Error("value costing MaxBytes not stored")
	}
}

// TestRightSized checks that a value with much spare capacity is stored
// in a right-sized copy.
func TestRightSized(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20})
	buf := make([]byte, 100, 4096)
	copy(buf, "abc")
	v, err := c.Get(bg, "k", func(context.Context) ([]byte, error) { return buf, nil })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, buf) || cap(v) > 112 {
		t.Errorf("stored %d bytes of capacity %d", len(v), cap(v))
	}
	snug := make([]byte, 100, 110)
	c.Set("snug", snug, 0)
	if v, _ := c.Peek("snug"); &v[0] != &snug[0] {
		t.Error("value with little spare capacity copied")
	}
}

func TestEmptyValues(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20})
	v, err := c.Get(bg, "", func(context.Context) ([]byte, error) { return nil, nil })
	if err != nil || v != nil {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if _, err := c.Get(bg, "", noFetch(t)); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Hits != 1 || s.Bytes != EntryOverhead {
		t.Errorf("Stats = %+v", s)
	}
}

func TestTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCache(t, Config{MaxBytes: 1 << 20, TTL: time.Minute})
		var calls atomic.Int64
		get := func() {
			t.Helper()
			if _, err := c.Get(bg, "k", fetcher("k", 10, &calls)); err != nil {
				t.Fatal(err)
			}
		}
		get()
		time.Sleep(time.Minute - time.Nanosecond)
		get()
		if calls.Load() != 1 {
			t.Fatalf("%d fetches within the TTL, want 1", calls.Load())
		}
		time.Sleep(time.Nanosecond)
		if _, ok := c.Peek("k"); ok {
			t.Error("Peek returns an expired value")
		}
		get()
		if calls.Load() != 2 {
			t.Fatalf("%d fetches after the TTL, want 2", calls.Load())
		}
		if s := c.Stats(); s.Entries != 1 || s.Bytes != cost("k", 10) {
			t.Errorf("expired entry still counted: %+v", s)
		}

		// Set's TTL is the entry's own; zero is none.
		c.Set("short", []byte("v"), time.Second)
		c.Set("forever", []byte("v"), 0)
		time.Sleep(time.Hour)
		if _, ok := c.Peek("short"); ok {
			t.Error("Set's TTL ignored")
		}
		if _, ok := c.Peek("forever"); !ok {
			t.Error("entry without TTL expired")
		}
		// The expired entry is dropped when Get finds it.
		if _, err := c.Get(bg, "short", func(context.Context) ([]byte, error) { return []byte("new"), nil }); err != nil {
			t.Fatal(err)
		}
		if v, _ := c.Peek("short"); string(v) != "new" {
			t.Errorf("short = %q after refetch", v)
		}
	})
}

func TestErrorsNotCached(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20})
	boom := errors.New("origin down")
	var calls atomic.Int64
	failing := func(context.Context) ([]byte, error) { calls.Add(1); return nil, boom }
	for range 2 {
		if _, err := c.Get(bg, "k", failing); !errors.Is(err, boom) {
			t.Fatalf("Get error %v, want %v", err, boom)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("%d fetches, want 2: an error is not cached", calls.Load())
	}
	v, err := c.Get(bg, "k", func(context.Context) ([]byte, error) { return []byte("ok"), nil })
	if err != nil || string(v) != "ok" {
		t.Fatalf("Get after errors = %q, %v", v, err)
	}
	if s := c.Stats(); s.FetchErrors != 2 || s.Fetches != 3 || s.Entries != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestFetchPanics(t *testing.T) {
	var logs testutil.LockedBuffer
	c := newCache(t, Config{MaxBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, err := c.Get(bg, "k", func(context.Context) ([]byte, error) { panic("oops") })
	if err == nil || !strings.Contains(err.Error(), "panicked: oops") {
		t.Fatalf("Get of a panicking fetch: %v", err)
	}
	if !strings.Contains(logs.String(), "fetch panicked") {
		t.Errorf("panic not logged: %s", logs.String())
	}
	if s := c.Stats(); s.FetchErrors != 1 || s.Entries != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestCancelledBeforeGet(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20})
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, err := c.Get(ctx, "k", noFetch(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
	// A hit is served whatever the context.
	c.Set("k", []byte("v"), 0)
	if v, err := c.Get(ctx, "k", noFetch(t)); err != nil || string(v) != "v" {
		t.Fatalf("hit with a cancelled context: %q, %v", v, err)
	}
}

func TestRateLog(t *testing.T) {
	var r rateLog
	now := time.Unix(1000, 0)
	if ok, _ := r.allow(now); !ok {
		t.Fatal("first line held back")
	}
	for range 5 {
		if ok, _ := r.allow(now.Add(LogInterval - 1)); ok {
			t.Fatal("line within the interval let through")
		}
	}
	if ok, dropped := r.allow(now.Add(LogInterval)); !ok || dropped != 5 {
		t.Fatalf("after the interval: %v, %d dropped; want true, 5", ok, dropped)
	}
}
