package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// eventually waits up to 5s for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingFetch returns a fetch of want that counts its calls, closes
// started when it starts, and returns once release is called (at the
// latest when the test ends, before its cache is closed).
func blockingFetch(t *testing.T, want []byte, calls *atomic.Int64) (fetch func(context.Context) ([]byte, error), fetchCtx *atomic.Value, started chan struct{}, release func()) {
	fetchCtx = new(atomic.Value)
	started, released := make(chan struct{}), make(chan struct{})
	release = sync.OnceFunc(func() { close(released) })
	t.Cleanup(release)
	fetch = func(ctx context.Context) ([]byte, error) {
		fetchCtx.Store(ctx)
		if calls.Add(1) == 1 {
			close(started)
		}
		<-released
		return want, nil
	}
	return fetch, fetchCtx, started, release
}

func TestCoalescing(t *testing.T) {
	const callers = 200
	c := newCache(t, Config{MaxBytes: 1 << 20})
	want := value("seg", 4096)
	var calls atomic.Int64
	fetch, _, _, release := blockingFetch(t, want, &calls)

	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			v, err := c.Get(bg, "seg", fetch)
			if err == nil && !bytes.Equal(v, want) {
				err = fmt.Errorf("got %d bytes, not the value", len(v))
			}
			errs <- err
		})
	}
	eventually(t, "every caller to miss", func() bool { return c.Stats().Misses == callers })
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("%d fetches for %d concurrent callers, want 1", calls.Load(), callers)
	}
	s := c.Stats()
	if s.Fetches != 1 || s.Coalesced != callers-1 || s.Misses != callers || s.Entries != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestCoalescingWaiterLeaves cancels the caller that started a fetch and
// another waiter: both return at once, the fetch goes on, and the other
// waiters get its value.
func TestCoalescingWaiterLeaves(t *testing.T) {
	const others = 199
	c := newCache(t, Config{MaxBytes: 1 << 20})
	want := value("seg", 4096)
	var calls atomic.Int64
	fetch, fetchCtx, started, release := blockingFetch(t, want, &calls)

	leave := func(ctx context.Context) chan error {
		ch := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, "seg", fetch)
			ch <- err
		}()
		return ch
	}
	firstCtx, cancelFirst := context.WithCancel(bg)
	defer cancelFirst()
	first := leave(firstCtx)
	<-started

	var wg sync.WaitGroup
	errs := make(chan error, others)
	for range others {
		wg.Go(func() {
			v, err := c.Get(bg, "seg", fetch)
			if err == nil && !bytes.Equal(v, want) {
				err = fmt.Errorf("got %d bytes, not the value", len(v))
			}
			errs <- err
		})
	}
	otherCtx, cancelOther := context.WithTimeout(bg, time.Hour)
	defer cancelOther()
	other := leave(otherCtx)
	eventually(t, "every caller to wait", func() bool { return c.Stats().Misses == others+2 })

	for name, w := range map[string]struct {
		cancel context.CancelFunc
		ch     chan error
	}{"first": {cancelFirst, first}, "other": {cancelOther, other}} {
		start := time.Now()
		w.cancel()
		select {
		case err := <-w.ch:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s waiter: %v, want context.Canceled", name, err)
			}
			t.Logf("%s waiter left after %v", name, time.Since(start))
		case <-time.After(time.Second):
			t.Fatalf("%s waiter did not return within 1s of its cancellation", name)
		}
	}
	if err := fetchCtx.Load().(context.Context).Err(); err != nil {
		t.Fatalf("the fetch's context ended with its first caller's: %v", err)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("%d fetches, want 1", calls.Load())
	}
	if _, ok := c.Peek("seg"); !ok {
		t.Error("value not stored")
	}
}

// TestAbandonedLookup checks that a fetch nobody waits for any more is
// cancelled, is not counted as a failure, and that the next Get fetches
// anew.
func TestAbandonedLookup(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 1 << 20})
	started, sawCancel, testOver := make(chan struct{}), make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(testOver) }) // before the cache's Close
	ctx, cancel := context.WithCancel(bg)
	type ctxKey struct{}
	ctx = context.WithValue(ctx, ctxKey{}, "trace")
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "k", func(fctx context.Context) ([]byte, error) {
			if fctx.Value(ctxKey{}) != "trace" {
				t.Error("the fetch's context lacks the caller's values")
			}
			close(started)
			select {
			case <-fctx.Done():
				close(sawCancel)
			case <-testOver:
			}
			return nil, fctx.Err()
		})
		done <- err
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Get: %v", err)
	}
	select {
	case <-sawCancel:
	case <-time.After(5 * time.Second):
		t.Fatal("abandoned fetch not cancelled")
	}
	v, err := c.Get(bg, "k", func(context.Context) ([]byte, error) { return []byte("v"), nil })
	if err != nil || string(v) != "v" {
		t.Fatalf("Get after an abandoned lookup: %q, %v", v, err)
	}
	c.Close()
	if s := c.Stats(); s.FetchErrors != 0 || s.Fetches != 2 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestConcurrentMixed runs Gets, Sets and Deletes of overlapping keys from
// many goroutines, with fetches that fail, stall, or outlast their
// callers, and checks that every value returned is its key's.
func TestConcurrentMixed(t *testing.T) {
	c := newCache(t, Config{MaxBytes: 64 << 10, TTL: 50 * time.Millisecond})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 2000 {
				key := fmt.Sprintf("k%d", rng.IntN(40))
				size := 8 + rng.IntN(4096)
				switch op := rng.IntN(100); {
				case op < 3:
					c.Delete(key)
				case op < 6:
					c.Set(key, value(key, size), time.Duration(rng.IntN(3))*time.Millisecond)
				default:
					ctx, cancel := context.WithCancel(bg)
					if op < 15 {
						ctx, cancel = context.WithTimeout(bg, time.Duration(rng.IntN(200))*time.Microsecond)
					}
					fail := op%7 == 0
					stall := time.Duration(rng.IntN(3)) * 100 * time.Microsecond
					v, err := c.Get(ctx, key, func(ctx context.Context) ([]byte, error) {
						time.Sleep(stall)
						if fail {
							return nil, errors.New("fail")
						}
						return value(key, size), nil
					})
					cancel()
					if err == nil && !bytes.HasPrefix(v, []byte(key+".")) {
						t.Errorf("Get(%s) = %.20q...", key, v)
						return
					}
				}
				if s := c.Stats(); s.Bytes > s.MaxBytes {
					t.Errorf("%d bytes stored, bound %d", s.Bytes, s.MaxBytes)
					return
				}
			}
		})
	}
	wg.Wait()
	c.Close()
	t.Logf("%+v", c.Stats())
}
