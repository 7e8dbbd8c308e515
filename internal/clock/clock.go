// Package clock is the time that cluster code reads: the real clock in a
// node, and a Fake that tests move by hand, so leases, expiry, backoff and
// clock skew are tested without sleeping.
package clock

import (
	"sort"
	"sync"
	"time"
)

// MaxSkew is how far apart two clocks may be and still agree on a
// signature's time: a signed URL or token is accepted until its expiry
// plus MaxSkew, and a node's signed internal request while its time is
// within MaxSkew of the receiver's, either way. Past it they are refused.
// Clocks kept by NTP are milliseconds apart; 30 s covers a signer whose
// clock is not, without letting a captured request or a link that ran
// out live on for long.
const MaxSkew = 30 * time.Second

// Clock tells the time and makes timers.
type Clock interface {
	// Now returns the current time: the wall clock, which may be stepped
	// (NTP, a VM resumed, date -s). Use it for what is shown or sent to
	// others; measure durations and deadlines with Monotonic.
	Now() time.Time
	// Monotonic returns a reading for deadlines and elapsed time: it moves
	// with elapsed time only, never with a step of the wall clock. Compare
	// readings of one clock with each other; their wall time means
	// nothing.
	Monotonic() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
	// NewTicker returns a ticker that sends the time every d.
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f on a goroutine of its own once d has passed,
	// unless the returned timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Ticker sends the time at intervals on C until stopped.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Timer is a pending call made by AfterFunc.
type Timer interface {
	// Stop prevents the call; it reports false when the call was
	// already made or stopped.
	Stop() bool
}

// Real is the system's clock.
var Real Clock = realClock{}

// OrReal returns c, or Real when c is nil.
func OrReal(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) Monotonic() time.Time                   { return time.Now() } // compared by its monotonic reading
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// Fake is a clock that moves only when told to. Its timers, tickers and
// After channels fire, in time order, as Advance passes them. Like a real
// clock it has a wall reading (Now) and a monotonic one (Monotonic):
// Advance moves both, Jump steps the wall clock alone, as NTP or an
// operator does, and timers follow the monotonic one. It is safe for
// concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time // wall
	mono    time.Time // monotonic: starts at the wall time, only Advance moves it
	waiters []*waiter
	seq     int
}

// waiter is a pending After, AfterFunc or ticker.
type waiter struct {
	at     time.Time // on the monotonic reading
	seq    int       // ties fire in the order they were made
	every  time.Duration
	ch     chan time.Time
	f      func()
	fake   *Fake
	active bool
}

// NewFake returns a fake clock that reads start.
func NewFake(start time.Time) *Fake { return &Fake{now: start, mono: start} }

// Now returns the fake wall time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Monotonic returns the fake monotonic reading: the start time plus every
// Advance, whatever Jump and Set did to the wall clock.
func (c *Fake) Monotonic() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// After returns a channel that receives the time once the clock has moved
// on by d.
func (c *Fake) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.add(&waiter{at: c.Monotonic().Add(d), ch: ch})
	return ch
}

// NewTicker returns a ticker that ticks each time the clock passes another
// d. Like time.Ticker it drops ticks its reader is not ready for.
func (c *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker interval")
	}
	w := &waiter{at: c.Monotonic().Add(d), every: d, ch: make(chan time.Time, 1)}
	c.add(w)
	return fakeTicker{w}
}

// AfterFunc calls f once the clock has moved on by d.
func (c *Fake) AfterFunc(d time.Duration, f func()) Timer {
	w := &waiter{at: c.Monotonic().Add(d), f: f}
	c.add(w)
	return fakeTimer{w}
}

// Waiters returns how many timers, tickers and After channels are
// pending: a test waits for the code under test to arm one before it
// advances the clock.
func (c *Fake) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Advance moves the clock on by d, wall and monotonic readings both,
// firing what comes due on the way, in time order, each at its own time.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.mono.Add(d)
	for {
		sort.Slice(c.waiters, func(i, j int) bool {
			a, b := c.waiters[i], c.waiters[j]
			return a.at.Before(b.at) || a.at.Equal(b.at) && a.seq < b.seq
		})
		if len(c.waiters) == 0 || c.waiters[0].at.After(end) {
			break
		}
		w := c.waiters[0]
		c.now = c.now.Add(w.at.Sub(c.mono))
		c.mono = w.at
		if w.every > 0 {
			w.at = w.at.Add(w.every)
		} else {
			c.waiters = c.waiters[1:]
			w.active = false
		}
		if w.ch != nil {
			select {
			case w.ch <- c.now:
			default:
			}
		}
		if w.f != nil {
			go w.f()
		}
	}
	c.now = c.now.Add(end.Sub(c.mono))
	c.mono = end
	c.mu.Unlock()
}

// Jump steps the wall clock by d, forward or back, as NTP or an operator
// setting the date does: Now moves, Monotonic does not, and no timer
// fires.
func (c *Fake) Jump(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t. A later t is an Advance: time passes and
// waiters due by then fire. An earlier one is a Jump back: the wall clock
// is stepped and the monotonic reading stays.
func (c *Fake) Set(t time.Time) {
	c.mu.Lock()
	now := c.now
	c.mu.Unlock()
	if !t.Before(now) {
		c.Advance(t.Sub(now))
		return
	}
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *Fake) add(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	w.seq, w.fake, w.active = c.seq, c, true
	c.waiters = append(c.waiters, w)
}

func (c *Fake) remove(w *waiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !w.active {
		return false
	}
	w.active = false
	for i, x := range c.waiters {
		if x == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			break
		}
	}
	return true
}

type fakeTicker struct{ w *waiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.ch }
func (t fakeTicker) Stop()               { t.w.fake.remove(t.w) }

type fakeTimer struct{ w *waiter }

func (t fakeTimer) Stop() bool { return t.w.fake.remove(t.w) }
