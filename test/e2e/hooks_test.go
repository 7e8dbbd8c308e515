//go:build unix

package e2e

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/webhook"
)

// hookReceiver is a webhook endpoint that refuses each event's first
// attempt, so every delivery is retried once.
type hookReceiver struct {
	mu       sync.Mutex
	tries    map[string]int // by idempotency key
	accepted []webhook.Event
	bad      []string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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

func (h *hookReceiver) events() []webhook.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.accepted)
}

// Sessions are listed and kicked through the API, and a webhook receiver
// sees every session start and end, signed, in order and retried.
func TestSessionsAndWebhooks(t *testing.T) {
	rc := &hookReceiver{tries: map[string]int{}}
	hooks := httptest.NewServer(rc)
	defer hooks.Close()
	n := startNode(t, func(c *config.Config) {
		c.WebhookURLs, c.WebhookSecret = []string{hooks.URL + "/hooks"}, "webhook-secret"
		c.PublisherGrace = 0
	})
	publishFFmpeg(t, n.rtmpURL("live/stream"))
	waitLive(t, n, "live/stream")
	rtmpViewer := playRTMP(t, n.RTMPAddr().String(), "live/stream")
	rtmpViewer.waitFrames(t, 10, 15*time.Second)
	flv := playFLV(t, n.httpURL+"/live/stream.flv")
	defer flv.close()

	type session struct{ ID, Kind, Protocol, Stream string }
	var list struct{ Sessions []session }
	waitFor(t, 5*time.Second, "three sessions in the API", func() bool {
		code, body := httpGet(t, n.httpURL+"/api/v1/sessions")
		return code == 200 && json.Unmarshal(body, &list) == nil && len(list.Sessions) == 3
	})
	byProto := map[string]session{}
	for _, s := range list.Sessions {
		byProto[s.Kind+"/"+s.Protocol] = s
		if s.Stream != "live/stream" {
			t.Errorf("session %+v on another stream", s)
		}
	}
	if len(byProto) != 3 || byProto["publish/rtmp"].ID == "" || byProto["play/rtmp"].ID == "" || byProto["play/flv"].ID == "" {
		t.Fatalf("sessions %+v, want an RTMP publisher, an RTMP player and an HTTP-FLV player", list.Sessions)
	}

	del := func(path string) int {
		req, _ := http.NewRequest(http.MethodDelete, n.httpURL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del("/api/v1/sessions/" + byProto["play/rtmp"].ID); code != http.StatusNoContent {
		t.Fatalf("kick the RTMP player: %d", code)
	}
	select {
	case <-rtmpViewer.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the kicked RTMP player is still connected")
	}
	if code := del("/api/v1/sessions/nothing"); code != http.StatusNotFound {
		t.Errorf("kick an unknown session: %d, want 404", code)
	}
	// Kicking the publisher ends the stream (no grace here) and its viewers.
	if code := del("/api/v1/streams/live/stream"); code != http.StatusNoContent {
		t.Fatalf("kick the publisher: %d", code)
	}
	waitFor(t, 5*time.Second, "the stream to end", func() bool { return n.Hub.Get(streamname.Name("live/stream")) == nil })

	// Every session's start and end reached the receiver, each on its
	// second attempt, in order.
	var got []webhook.Event
	waitFor(t, 15*time.Second, "six webhook deliveries", func() bool { got = rc.events(); return len(got) >= 6 })
	rc.mu.Lock()
	if len(rc.bad) > 0 {
		t.Errorf("bad deliveries: %v", rc.bad)
	}
	for id, n := range rc.tries {
		if n != 2 {
			t.Errorf("event %s tried %d times, want 2 (refused once, then accepted)", id, n)
		}
	}
	rc.mu.Unlock()
	var names []string
	for i, ev := range got {
		names = append(names, ev.Event+"/"+ev.Protocol)
		if i > 0 && ev.Seq <= got[i-1].Seq {
			t.Errorf("event %d out of order: seq %d after %d", i, ev.Seq, got[i-1].Seq)
		}
		if ev.Stream != "live/stream" || ev.Session == "" || ev.Node == "" || !strings.HasPrefix(ev.RemoteAddr, "127.0.0.1:") {
			t.Errorf("event %+v", ev)
		}
	}
	// A kick ends its session at once; the HTTP-FLV player's ends with the
	// stream.
	want := []string{"on_publish/rtmp", "on_play/rtmp", "on_play/flv", "on_stop/rtmp", "on_publish_done/rtmp", "on_stop/flv"}
	if !slices.Equal(names, want) {
		t.Errorf("deliveries %v, want %v", names, want)
	}

	// The effective configuration, without its secrets, and the API's
	// description.
	code, body := httpGet(t, n.httpURL+"/api/v1/config")
	if code != 200 || strings.Contains(string(body), "webhook-secret") || !strings.Contains(string(body), `"webhook_urls"`) {
		t.Errorf("config: %d %s", code, body)
	}
	code, body = httpGet(t, n.httpURL+"/api/v1/openapi.json")
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if code != 200 || json.Unmarshal(body, &doc) != nil || doc.OpenAPI == "" || doc.Paths["/api/v1/route"] == nil {
		t.Errorf("openapi.json: %d, %.200s", code, body)
	}
}
