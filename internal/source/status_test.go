package source

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// hub publishes into plain streams.
type hub struct{}

func (hub) Publish(name streamname.Name, info stream.PublisherInfo) (*stream.Publisher, error) {
	return stream.New(name, stream.Config{}).Attach(info)
}

func state(m *Manager, name streamname.Name) Status {
	for _, st := range m.List() {
		if st.Stream == name {
			return st
		}
	}
	return Status{}
}

// TestStatus: a source's state, bytes, restarts and last error as the
// admin API shows them, without its credentials.
func TestStatus(t *testing.T) {
	const raw = "rtsp://admin:hunter22@10.0.0.9/cam?key=opensesame"
	var sessions atomic.Int64
	fail := make(chan struct{})
	m := New(Config{
		Sources: map[streamname.Name]Source{
			"live/cam":  {URL: raw},
			"live/idle": {URL: "rtmp://h/live/x?token=abcdef", Mode: Always},
		},
		RTSP: func(ctx context.Context, url, transport string, w PacketWriter) error {
			if transport != "tcp" {
				t.Errorf("transport %q, want tcp", transport)
			}
			if sessions.Add(1) == 1 {
				<-fail
				return errors.New("dial " + url + ": refused (opensesame)")
			}
			w.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: []byte{0x12, 0x10}})
			for i := int64(0); ; i++ {
				if err := w.WritePacket(&media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: i * 20, Payload: make([]byte, 100)}); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		},
		NodeID: func() string { return "node-a" },
		Idle:   time.Hour,
	}, hub{})
	defer m.Close()

	if st := state(m, "live/cam"); st.State != Idle || st.Mode != OnDemand || st.Node != "" || st.URL != "rtsp://10.0.0.9/cam?key=xxx" {
		t.Errorf("before its first viewer: %+v", st)
	}
	if err := m.Open("live/cam"); err != nil {
		t.Fatal(err)
	}
	if st := state(m, "live/cam"); st.State != Connecting || st.Node != "node-a" {
		t.Errorf("connecting: %+v", st)
	}
	close(fail)
	testutil.WaitFor(t, 10*time.Second, "the source to pull again after its failure", func() bool {
		st := state(m, "live/cam")
		return st.State == Pulling && st.BytesReceived > 1000
	})
	st := state(m, "live/cam")
	if st.Restarts != 1 || !strings.Contains(st.LastError, "refused") {
		t.Errorf("after a failure: %+v, want 1 restart and its error", st)
	}

	mux := httpfront.NewMux()
	Routes{M: m, Admin: func(h http.HandlerFunc) http.HandlerFunc { return h }}.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/sources", nil))
	body := rec.Body.String()
	var doc struct{ Sources []Status }
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || rec.Code != 200 || len(doc.Sources) != 2 {
		t.Fatalf("GET /api/v1/sources: %d %s %v", rec.Code, body, err)
	}
	for _, secret := range []string{"admin", "hunter22", "opensesame", "abcdef"} {
		if strings.Contains(body, secret) {
			t.Errorf("GET /api/v1/sources shows %q: %s", secret, body)
		}
	}
}

// TestStall: a source that sends nothing for the timeout is dropped and
// pulled again.
func TestStall(t *testing.T) {
	var sessions atomic.Int64
	m := New(Config{
		Sources: map[streamname.Name]Source{"live/cam": {URL: "rtsp://h/cam"}},
		RTSP: func(ctx context.Context, _, _ string, w PacketWriter) error {
			sessions.Add(1)
			<-ctx.Done()
			return ctx.Err()
		},
		Timeout: 100 * time.Millisecond,
		Idle:    time.Hour,
	}, hub{})
	defer m.Close()
	if err := m.Open("live/cam"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a stalled source to be retried", func() bool { return sessions.Load() >= 2 })
	if st := state(m, "live/cam"); !strings.Contains(st.LastError, "sent nothing") {
		t.Errorf("last error %q, want the stall", st.LastError)
	}
}
