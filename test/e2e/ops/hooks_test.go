//go:build unix

package ops

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/internal/webhook"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// Sessions are listed and kicked through the API, and a webhook receiver
// sees every session start and end, signed, in order and retried.
func TestSessionsAndWebhooks(t *testing.T) {
	t.Parallel()
	rc := e2eutil.NewHookReceiver()
	hooks := httptest.NewServer(rc)
	defer hooks.Close()
	n := e2eutil.StartNode(t, func(c *config.Config) {
		c.WebhookURLs, c.WebhookSecret = []string{hooks.URL + "/hooks"}, "webhook-secret"
		c.PublisherGrace = 0
	})
	e2eutil.PublishFFmpeg(t, n.RTMPURL("live/stream"))
	e2eutil.WaitLive(t, n, "live/stream")
	rtmpViewer := e2eutil.PlayRTMP(t, n.RTMPAddr().String(), "live/stream")
	rtmpViewer.WaitFrames(t, 10, 15*time.Second)
	flv := e2eutil.PlayFLV(t, n.HTTPURL+"/live/stream.flv")
	defer flv.Close()

	type session struct{ ID, Kind, Protocol, Stream string }
	var list struct{ Sessions []session }
	testutil.WaitFor(t, 5*time.Second, "three sessions in the API", func() bool {
		code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/sessions")
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
		req, _ := http.NewRequest(http.MethodDelete, n.HTTPURL+path, nil)
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
	case <-rtmpViewer.Done:
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
	testutil.WaitFor(t, 5*time.Second, "the stream to end", func() bool { return n.Hub.Get(streamname.Name("live/stream")) == nil })

	// Every session's start and end reached the receiver, each on its
	// second attempt, in order.
	var got []webhook.Event
	testutil.WaitFor(t, 15*time.Second, "six webhook deliveries", func() bool { got = rc.Events(); return len(got) >= 6 })
	if bad := rc.Bad(); len(bad) > 0 {
		t.Errorf("bad deliveries: %v", bad)
	}
	for id, n := range rc.Tries() {
		if n != 2 {
			t.Errorf("event %s tried %d times, want 2 (refused once, then accepted)", id, n)
		}
	}
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
	code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/config")
	if code != 200 || strings.Contains(string(body), "webhook-secret") || !strings.Contains(string(body), `"webhook_urls"`) {
		t.Errorf("config: %d %s", code, body)
	}
	code, body = e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/openapi.json")
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if code != 200 || json.Unmarshal(body, &doc) != nil || doc.OpenAPI == "" || doc.Paths["/api/v1/route"] == nil {
		t.Errorf("openapi.json: %d, %.200s", code, body)
	}
}
