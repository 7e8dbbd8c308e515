package srt

import (
	"io"
	"sync"
	"time"
)

// watchdog closes a connection that delivers no data for longer than its
// limit: gosrt's connections have no read deadlines.
type watchdog struct {
	r      io.ReadCloser
	mu     sync.Mutex
	last   time.Time
	lim    time.Duration
	done   chan struct{}
	fire   bool
	closed sync.Once
}

func newWatchdog(r io.ReadCloser, limit time.Duration) *watchdog {
	w := &watchdog{r: r, last: time.Now(), lim: limit, done: make(chan struct{})}
	go w.watch()
	return w
}

func (w *watchdog) watch() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case now := <-t.C:
			w.mu.Lock()
			late := now.Sub(w.last) > w.lim
			if late {
				w.fire = true
			}
			w.mu.Unlock()
			if late {
				w.r.Close()
				return
			}
		}
	}
}

func (w *watchdog) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.mu.Lock()
		w.last = time.Now()
		w.mu.Unlock()
	}
	return n, err
}

// setLimit changes the limit, from now on.
func (w *watchdog) setLimit(d time.Duration) {
	w.mu.Lock()
	w.lim, w.last = d, time.Now()
	w.mu.Unlock()
}

func (w *watchdog) limit() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lim
}

func (w *watchdog) fired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fire
}

func (w *watchdog) stop() { w.closed.Do(func() { close(w.done) }) }
