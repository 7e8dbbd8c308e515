package app

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/webhook"
)

// hookSink collects webhook events.
type hookSink struct {
	mu     sync.Mutex
	events []webhook.Event
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev webhook.Event
	json.NewDecoder(r.Body).Decode(&ev)
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
}

// recordDone returns the on_record_done events received so far.
func (h *hookSink) recordDone() []webhook.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []webhook.Event
	for _, ev := range h.events {
		if ev.Event == webhook.OnRecordDone {
			out = append(out, ev)
		}
	}
	return out
}

// publishGOP publishes one GOP of H.264 and AAC to name on a's hub as a
// publisher session, and ends the session.
func publishGOP(t *testing.T, a *App, name streamname.Name) {
	t.Helper()
	pub, err := a.Hub.Publish(name, stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	_, end := a.Hub.StartSession(hub.Session{Kind: hub.KindPublish, Protocol: "test", Stream: name}, func() {})
	avcC := []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xeb}
	pkts := []*media.Packet{
		{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: avcC},
		{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: []byte{0x11, 0x90}},
	}
	for i := range 30 {
		pkts = append(pkts,
			&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: int64(i) * 33, Keyframe: i == 0, Payload: []byte{0, 0, 0, 2, 0x65, 0}},
			&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: int64(i) * 33, Payload: []byte{0x21, 0}})
	}
	for _, p := range pkts {
		if err := pub.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	pub.Close()
	end()
}

func TestRecordingWiring(t *testing.T) {
	sink := &hookSink{}
	hooks := httptest.NewServer(sink)
	defer hooks.Close()
	dir := t.TempDir()
	// A recording a crash interrupted, cut in its last tag.
	part := flv.AppendHeader(nil, true, false)
	part = flv.AppendTag(part, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, Payload: []byte{0, 0, 0, 1, 0x65}})
	part = flv.AppendTag(part, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: 40, Payload: []byte{0, 0, 0, 1, 0x41}})
	if err := os.WriteFile(filepath.Join(dir, "live-old-20260102-030405.flv.part"), part[:len(part)-3], 0o644); err != nil {
		t.Fatal(err)
	}

	a := startApp(t, func(c *config.Config) {
		c.RecordDir = dir
		c.Apps = map[string]config.AppConfig{"live": {Record: "all"}} // only live: --record stays off
		c.WebhookURLs, c.WebhookSecret = []string{hooks.URL}, "webhook-secret"
		c.PublisherGrace = 0
	})
	if a.Recorder() == nil || a.Recorder().Dir() != dir {
		t.Fatalf("recorder %v, want one writing to %s", a.Recorder(), dir)
	}
	publishGOP(t, a, "other/cam") // not recorded
	publishGOP(t, a, "live/cam")

	deadline := time.Now().Add(10 * time.Second)
	for len(sink.recordDone()) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := sink.recordDone()
	if len(got) != 2 {
		t.Fatalf("on_record_done events: %+v, want the recovered recording and live/cam's", got)
	}
	byName := map[string]webhook.Event{}
	for _, ev := range got {
		byName[ev.Stream] = ev
	}
	old, cam := byName[""], byName["live/cam"]
	if old.Recording != "live-old-20260102-030405" || old.Path != filepath.Join(dir, "live-old-20260102-030405.flv") ||
		old.Bytes != int64(flv.HeaderSize+flv.TagSize(&media.Packet{Kind: media.KindVideo, Payload: make([]byte, 5)})) {
		t.Errorf("recovered recording's event = %+v", old)
	}
	if !strings.HasPrefix(cam.Recording, "live-cam-") || cam.Path != filepath.Join(dir, cam.Recording+".flv") ||
		cam.Session == "" || cam.Bytes == 0 || cam.Duration < 0.9 || cam.Node == "" {
		t.Errorf("live/cam's event = %+v", cam)
	}
	if st, err := os.Stat(cam.Path); err != nil || st.Size() != cam.Bytes {
		t.Errorf("%s: %v, want %d bytes", cam.Path, err, cam.Bytes)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("the record dir holds %d files, want the 2 recordings", len(entries))
	}

	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"meshcast_recordings_active 0", "meshcast_recordings_finished_total 2", `meshcast_recordings_failed_total{reason="disk_full"} 0`, `meshcast_recordings_failed_total{reason="io_error"} 0`} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics has no %q", want)
		}
	}
}

func TestNoRecorderWhenRecordingIsOff(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rec")
	a := startApp(t, func(c *config.Config) { c.RecordDir = dir })
	if a.Recorder() != nil {
		t.Error("a recorder with recording off and no record dir")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("record dir created with recording off: %v", err)
	}
}
