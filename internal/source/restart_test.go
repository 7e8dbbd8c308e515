package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	nodehub "github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

// flvSource serves an endless HTTP-FLV stream of one H.264 track, a
// keyframe every 40 ms, and counts the requests it answered.
func flvSource(t *testing.T) (*httptest.Server, *atomic.Int32) {
	avcC := []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xeb}
	var pulls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pulls.Add(1)
		w.Header().Set("Content-Type", "video/x-flv")
		b := []byte{'F', 'L', 'V', 1, 1, 0, 0, 0, 9, 0, 0, 0, 0}
		b = flv.AppendTag(b, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: avcC})
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for dts := int64(0); ; dts += 40 {
			b = flv.AppendTag(b, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, DTS: dts, Payload: []byte{0, 0, 0, 2, 0x65, 0x88}})
			if _, err := w.Write(b); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			b = b[:0]
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &pulls
}

// TestOnDemandRestart: an on-demand source that stopped for want of
// viewers waits out the publisher grace like any publisher; a viewer who
// arrives then starts it again, and the stream resumes for that viewer.
func TestOnDemandRestart(t *testing.T) {
	srv, pulls := flvSource(t)
	const name = streamname.Name("live/cam")
	var m *Manager
	h := nodehub.New(nodehub.Config{
		PublisherGrace: 30 * time.Second,
		Reserved:       func(n streamname.Name) bool { return m.Has(n) },
		Upstream:       upstreamFunc(func(n streamname.Name) error { return m.Open(n) }),
	})
	defer h.Close()
	m = New(Config{Sources: map[streamname.Name]Source{name: {URL: srv.URL + "/live/cam.flv"}}, Idle: 200 * time.Millisecond, Timeout: 5 * time.Second}, h)
	defer m.Close()

	first, err := h.NewReader(name, "flv")
	if err != nil {
		t.Fatalf("the first viewer: %v", err)
	}
	s := first.Stream()
	testutil.WaitFor(t, 5*time.Second, "the source to go live", s.HasPublisher)
	first.Close()
	testutil.WaitFor(t, 5*time.Second, "the source to stop without viewers", func() bool { return !s.HasPublisher() })
	if h.Get(name) != s {
		t.Fatal("the stream ended at once: it should wait out its grace")
	}

	second, err := h.NewReader(name, "flv")
	if err != nil {
		t.Fatalf("a viewer during the grace: %v", err)
	}
	defer second.Close()
	testutil.WaitFor(t, 5*time.Second, "the source to start again", s.HasPublisher)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var pkts []*media.Packet
	for len(pkts) < 5 {
		if pkts, err = second.ReadPackets(ctx, pkts); err != nil {
			t.Fatalf("the second viewer got %d packets: %v", len(pkts), err)
		}
	}
	if n := pulls.Load(); n != 2 {
		t.Errorf("the source was pulled %d times, want 2", n)
	}
}

type upstreamFunc func(streamname.Name) error

func (f upstreamFunc) Pull(name streamname.Name, _ []string) error { return f(name) }
