package clock

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestFakeAfterFiresWhenPassed(t *testing.T) {
	c := NewFake(start)
	ch := c.After(time.Second)
	c.Advance(999 * time.Millisecond)
	select {
	case <-ch:
		t.Fatal("After fired early")
	default:
	}
	c.Advance(time.Millisecond)
	select {
	case got := <-ch:
		if !got.Equal(start.Add(time.Second)) {
			t.Fatalf("After sent %v, want %v", got, start.Add(time.Second))
		}
	default:
		t.Fatal("After did not fire")
	}
	if c.Waiters() != 0 {
		t.Fatalf("%d waiters left", c.Waiters())
	}
}

func TestFakeTickerTicksAndDrops(t *testing.T) {
	c := NewFake(start)
	tk := c.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	c.Advance(350 * time.Millisecond) // three ticks due; the channel holds one
	got := <-tk.C()
	if !got.Equal(start.Add(100 * time.Millisecond)) {
		t.Fatalf("first tick at %v, want +100ms", got.Sub(start))
	}
	select {
	case <-tk.C():
		t.Fatal("a dropped tick was kept")
	default:
	}
	c.Advance(50 * time.Millisecond)
	if got := <-tk.C(); !got.Equal(start.Add(400 * time.Millisecond)) {
		t.Fatalf("tick at %v, want +400ms", got.Sub(start))
	}
	if !c.Now().Equal(start.Add(400 * time.Millisecond)) {
		t.Fatalf("Now = %v, want +400ms", c.Now().Sub(start))
	}
}

func TestFakeAfterFuncInOrderAndStop(t *testing.T) {
	c := NewFake(start)
	fired := make(chan int, 3)
	c.AfterFunc(2*time.Second, func() { fired <- 2 })
	c.AfterFunc(time.Second, func() { fired <- 1 })
	stopped := c.AfterFunc(1500*time.Millisecond, func() { fired <- 9 })
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if stopped.Stop() {
		t.Fatal("a second Stop reported true")
	}
	c.Advance(time.Second)
	if got := <-fired; got != 1 {
		t.Fatalf("fired %d first, want 1", got)
	}
	c.Advance(time.Second)
	if got := <-fired; got != 2 {
		t.Fatalf("fired %d, want 2", got)
	}
	select {
	case got := <-fired:
		t.Fatalf("stopped timer fired (%d)", got)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestFakeSetBackwards(t *testing.T) {
	c := NewFake(start)
	ch := c.After(time.Second)
	c.Set(start.Add(-time.Hour))
	if !c.Now().Equal(start.Add(-time.Hour)) {
		t.Fatalf("Now = %v after a step back", c.Now())
	}
	select {
	case <-ch:
		t.Fatal("After fired on a step back")
	default:
	}
	c.Set(start.Add(time.Second))
	<-ch
}

func TestReal(t *testing.T) {
	if OrReal(nil) != Real {
		t.Fatal("OrReal(nil) is not Real")
	}
	tk := Real.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Stop()
	<-Real.After(time.Millisecond)
	done := make(chan struct{})
	Real.AfterFunc(time.Millisecond, func() { close(done) })
	<-done
	if d := time.Since(Real.Now()); d < 0 || d > time.Second {
		t.Fatalf("Real.Now is %v away", d)
	}
}

// A wall-clock step, forward or back, moves Now and nothing else: the
// monotonic reading and the timers on it stay where they were, and only
// elapsed time (Advance) fires them.
func TestFakeJump(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		c := NewFake(start)
		ch := c.After(time.Second)
		c.Jump(step)
		if !c.Now().Equal(start.Add(step)) || !c.Monotonic().Equal(start) {
			t.Fatalf("after Jump(%v): Now %v, Monotonic %v; want %v, %v", step, c.Now(), c.Monotonic(), start.Add(step), start)
		}
		select {
		case <-ch:
			t.Fatalf("After(1s) fired on Jump(%v)", step)
		default:
		}
		c.Advance(time.Second)
		select {
		case <-ch:
		default:
			t.Fatalf("After(1s) did not fire a second after Jump(%v)", step)
		}
		if !c.Now().Equal(start.Add(step+time.Second)) || !c.Monotonic().Equal(start.Add(time.Second)) {
			t.Fatalf("a second after Jump(%v): Now %v, Monotonic %v", step, c.Now(), c.Monotonic())
		}
	}
}

// Real's monotonic reading is time.Now's, which Go compares by its
// monotonic clock.
func TestRealMonotonic(t *testing.T) {
	a := Real.Monotonic()
	if b := Real.Monotonic(); b.Before(a) {
		t.Fatalf("Monotonic went back: %v then %v", a, b)
	}
	if a.Round(0) == a { // Round(0) strips the monotonic reading
		t.Fatal("Real.Monotonic has no monotonic reading")
	}
}
