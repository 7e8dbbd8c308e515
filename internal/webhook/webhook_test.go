package webhook

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// receiver records deliveries; fail decides the status of each attempt.
type receiver struct {
	mu       sync.Mutex
	attempts []Event
	accepted []Event
	badSig   int
	fail     func(ev Event, attempt int) int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev Event
	json.Unmarshal(body, &ev)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !hmac.Equal([]byte(r.Header.Get(HeaderSignature)), []byte(Sign("hook-secret", r.Header.Get(HeaderTimestamp), body))) ||
		r.Header.Get(HeaderIdempotency) != ev.ID || r.Header.Get(HeaderEvent) != ev.Event {
		rc.badSig++
	}
	n := 0
	for _, a := range rc.attempts {
		if a.ID == ev.ID {
			n++
		}
	}
	rc.attempts = append(rc.attempts, ev)
	status := http.StatusNoContent
	if rc.fail != nil {
		status = rc.fail(ev, n+1)
	}
	if status/100 == 2 {
		rc.accepted = append(rc.accepted, ev)
	}
	w.WriteHeader(status)
}

func (rc *receiver) wait(t *testing.T, n int) []Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc.mu.Lock()
		got := append([]Event(nil), rc.accepted...)
		rc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events accepted", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliveriesAreSignedOrderedAndRetried(t *testing.T) {
	rc := &receiver{fail: func(ev Event, attempt int) int {
		if ev.Event == OnPublish && attempt <= 2 {
			return http.StatusServiceUnavailable // the receiver is down twice
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := New(Config{URLs: []string{srv.URL}, Secret: "hook-secret", Node: "node-a", Backoff: 10 * time.Millisecond})
	defer d.Close()

	for _, e := range []string{OnPublish, OnPlay, OnStop, OnPublishDone} {
		d.Notify(Event{Event: e, Stream: "live/a", Session: "s1", Protocol: "rtmp", RemoteAddr: "192.0.2.1:5000"})
	}
	d.Notify(Event{Event: OnPublish, Stream: "live/b"})
	got := rc.wait(t, 5)

	var a []string
	var lastSeq uint64
	for _, ev := range got {
		if ev.Stream != "live/a" {
			continue
		}
		a = append(a, ev.Event)
		if ev.Seq <= lastSeq || ev.Node != "node-a" || ev.Time.IsZero() || ev.RemoteAddr != "192.0.2.1:5000" {
			t.Errorf("event %+v", ev)
		}
		lastSeq = ev.Seq
	}
	if want := []string{OnPublish, OnPlay, OnStop, OnPublishDone}; len(a) != 4 || a[0] != want[0] || a[1] != want[1] || a[2] != want[2] || a[3] != want[3] {
		t.Errorf("live/a delivered in order %v, want %v", a, want)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.badSig != 0 {
		t.Errorf("%d attempts with a bad signature or headers", rc.badSig)
	}
	// on_publish of live/a took three attempts with one idempotency key.
	ids := map[string]int{}
	for _, at := range rc.attempts {
		if at.Stream == "live/a" && at.Event == OnPublish {
			ids[at.ID]++
		}
	}
	for id, n := range ids {
		if len(ids) != 1 || n != 3 {
			t.Errorf("on_publish attempts by ID %v, want one ID (%s) tried 3 times", ids, id)
		}
	}
}

func TestRefusedIsNotRetried(t *testing.T) {
	rc := &receiver{fail: func(ev Event, _ int) int {
		if ev.Event == OnPlay {
			return http.StatusForbidden
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	d := New(Config{URLs: []string{srv.URL}, Secret: "hook-secret", Backoff: 10 * time.Millisecond})
	defer d.Close()
	d.Notify(Event{Event: OnPlay, Stream: "live/a"})
	d.Notify(Event{Event: OnStop, Stream: "live/a"})
	rc.wait(t, 1)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.attempts) != 2 || rc.attempts[0].Event != OnPlay || rc.attempts[1].Event != OnStop {
		t.Errorf("attempts %v: want on_play once (refused, not retried), then on_stop", rc.attempts)
	}
}

func TestPendingIsBounded(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	d := New(Config{URLs: []string{srv.URL}, Secret: "s", MaxPending: 3})
	defer d.Close()
	for range 10 {
		d.Notify(Event{Event: OnPlay, Stream: "live/a"})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending != 3 {
		t.Errorf("%d events waiting, want the bound of 3", d.pending)
	}
}
