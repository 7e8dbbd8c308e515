//go:build unix

package e2eutil

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"

	"github.com/meshcast/meshcast/internal/webhook"
)

// HookReceiver is a webhook endpoint for deliveries signed with the secret
// "webhook-secret" that refuses each event's first attempt, so every
// delivery is retried once.
type HookReceiver struct {
	mu       sync.Mutex
	tries    map[string]int // by idempotency key
	accepted []webhook.Event
	bad      []string
}

// NewHookReceiver returns a receiver that has seen no delivery yet.
func NewHookReceiver() *HookReceiver {
	return &HookReceiver{tries: map[string]int{}}
}

// ServeHTTP takes one delivery attempt.
func (h *HookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev webhook.Event
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := json.Unmarshal(body, &ev); err != nil {
		h.bad = append(h.bad, "undecodable body")
	}
	if want := webhook.Sign("webhook-secret", r.Header.Get(webhook.HeaderTimestamp), body); !hmac.Equal([]byte(r.Header.Get(webhook.HeaderSignature)), []byte(want)) {
		h.bad = append(h.bad, "bad signature on "+ev.Event)
	}
	if r.Header.Get(webhook.HeaderIdempotency) != ev.ID {
		h.bad = append(h.bad, "idempotency key differs from the event ID")
	}
	h.tries[ev.ID]++
	if h.tries[ev.ID] == 1 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	h.accepted = append(h.accepted, ev)
}

// Events returns the events accepted so far, in the order they arrived.
func (h *HookReceiver) Events() []webhook.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.accepted)
}

// Bad returns what was wrong with the deliveries so far: undecodable
// bodies, bad signatures, idempotency keys other than the event's ID.
func (h *HookReceiver) Bad() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.bad)
}

// Tries returns how many times each event was delivered, by idempotency
// key.
func (h *HookReceiver) Tries() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.tries)
}
