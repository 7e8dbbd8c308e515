package httpflv

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var avcC = []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xeb}

const cam = streamname.Name("live/cam")

// env is an HTTP-FLV server over a hub with one published stream, served
// at /APP/STREAM.flv (?pull: as a relay pull, ending with "END").
type env struct {
	h   *hub.Hub
	pub *stream.Publisher
	url string
	dts int64
}

func start(t *testing.T, hcfg hub.Config) *env {
	t.Helper()
	return startWith(t, hcfg, Config{})
}

// startWith is start with the server's configuration cfg.
func startWith(t *testing.T, hcfg hub.Config, cfg Config) *env {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	hcfg.Logger = quiet
	h := hub.New(hcfg)
	pub, err := h.Publish(cam, stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{h: h, pub: pub}
	e.write(t, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: avcC})
	e.frame(t, true)
	cfg.Logger = quiet
	s := New(cfg, h)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := streamname.Name(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".flv"))
		if r.URL.Query().Has("pull") {
			s.ServePull(w, r, name, "relay", []byte("END"), nil)
			return
		}
		s.ServeStream(w, r, name)
	}))
	e.url = srv.URL + "/" + string(cam) + ".flv"
	t.Cleanup(func() {
		h.Close() // streams end: every viewer's response ends
		s.Close()
		srv.Close()
	})
	return e
}

func (e *env) write(t *testing.T, p *media.Packet) {
	t.Helper()
	if err := e.pub.WritePacket(p); err != nil {
		t.Fatal(err)
	}
}

// frame publishes the next video frame, 40 ms after the last.
func (e *env) frame(t *testing.T, key bool) {
	t.Helper()
	e.dts += 40
	e.write(t, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: e.dts, Keyframe: key, Payload: []byte{0, 0, 0, 2, 0x65, 0x88}})
}

// tags reads FLV tags from r until it has n video tags, and returns their
// AVC packet types (0: sequence header, 1: frame).
func tags(t *testing.T, r *flv.Reader, n int) []byte {
	t.Helper()
	var kinds []byte
	for len(kinds) < n {
		typ, _, body, err := r.ReadTag()
		if err != nil {
			t.Fatalf("after %d video tags: %v", len(kinds), err)
		}
		if typ == 9 && len(body) > 1 {
			kinds = append(kinds, body[1])
		}
	}
	return kinds
}

// A viewer gets the FLV header, the decoder configuration and the keyframe
// at once, then what is published, as a session of the hub's.
func TestServeStream(t *testing.T) {
	e := start(t, hub.Config{})
	resp, err := http.Get(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "video/x-flv" {
		t.Fatalf("%s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	r := flv.NewReader(resp.Body)
	if hasVideo, _, err := r.ReadHeader(); err != nil || !hasVideo {
		t.Fatalf("FLV header: video %v, %v", hasVideo, err)
	}
	if got := tags(t, r, 2); !bytes.Equal(got, []byte{0, 1}) {
		t.Fatalf("first video tags %v, want the sequence header, then the keyframe", got)
	}
	e.frame(t, false)
	if got := tags(t, r, 1); got[0] != 1 {
		t.Fatalf("next video tag %v, want a frame", got)
	}
	sessions := e.h.Sessions()
	if len(sessions) != 1 || sessions[0].Protocol != "flv" || sessions[0].Stream != cam || sessions[0].Kind != hub.KindPlay {
		t.Fatalf("sessions %+v, want one flv viewer of %s", sessions, cam)
	}
	// The viewer leaves: the session ends.
	resp.Body.Close()
	testutil.WaitFor(t, 10*time.Second, "the session to end", func() bool {
		e.frame(t, false) // a write finds the hang-up
		return len(e.h.Sessions()) == 0
	})
}

func TestServeStreamNotFound(t *testing.T) {
	e := start(t, hub.Config{})
	resp, err := http.Get(strings.Replace(e.url, "cam", "nothing", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("%s, want 404", resp.Status)
	}
}

// A relay pull is no session, and ends with the end bytes when the stream
// ends.
func TestServePullEnd(t *testing.T) {
	e := start(t, hub.Config{})
	resp, err := http.Get(e.url + "?pull")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := flv.NewReader(resp.Body)
	if _, _, err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	tags(t, r, 2)
	if n := len(e.h.Sessions()); n != 0 {
		t.Fatalf("%d sessions for a relay pull", n)
	}
	e.pub.Close() // no grace: the stream ends
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.HasSuffix(rest, []byte("END")) {
		t.Fatalf("after the stream ended: %q, %v; want the end bytes, then EOF", rest, err)
	}
}

// A relay pull of a stream with nothing to send (its publisher paused, or
// away within its grace) gets a keep-alive tag every second, so that the
// puller tells a quiet stream from a dead link; packets flowing, it gets
// none.
func TestServePullKeepAlive(t *testing.T) {
	e := start(t, hub.Config{})
	resp, err := http.Get(e.url + "?pull")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := flv.NewReader(resp.Body)
	if _, _, err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	tags(t, r, 2)
	keepAlive := cluster.KeepAliveTag()
	var at []time.Time
	for len(at) < 3 {
		typ, _, body, err := r.ReadTag()
		if err != nil {
			t.Fatal(err)
		}
		if typ != 18 || !bytes.Equal(body, keepAlive[11:len(keepAlive)-4]) {
			t.Fatalf("tag %d (% x) while the stream is quiet, want the keep-alive", typ, body)
		}
		at = append(at, time.Now())
	}
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d < cluster.KeepAliveEvery/2 {
			t.Errorf("keep-alives %v apart, want one a second", d)
		}
	}
	// Frames every 100 ms leave no second quiet: video only, no keep-alive.
	for range 15 {
		e.frame(t, false)
		typ, _, _, err := r.ReadTag()
		if err != nil {
			t.Fatal(err)
		}
		if typ != 9 {
			t.Fatalf("tag %d among frames 100 ms apart, want video only", typ)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A relay pull is written as each packet arrives, whatever the merge
// window of the node's viewers, which wait for theirs.
func TestServePullIgnoresMergeWindow(t *testing.T) {
	e := startWith(t, hub.Config{}, Config{MergeWindow: time.Second})
	open := func(url string) *flv.Reader {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		r := flv.NewReader(resp.Body)
		if _, _, err := r.ReadHeader(); err != nil {
			t.Fatal(err)
		}
		tags(t, r, 2) // the configuration and the keyframe, with the answer
		return r
	}
	pull, viewer := open(e.url+"?pull"), open(e.url)
	var viewerWait time.Duration
	for i := range 3 {
		e.frame(t, false)
		sent := time.Now()
		tags(t, pull, 1)
		if d := time.Since(sent); d > 500*time.Millisecond {
			t.Errorf("frame %d reached the pull %v after it was published; want it at once, not after the 1 s window", i, d)
		}
		tags(t, viewer, 1)
		viewerWait = max(viewerWait, time.Since(sent))
	}
	if viewerWait < 500*time.Millisecond {
		t.Errorf("the viewer waited at most %v for a frame; want its 1 s merge window in force", viewerWait)
	}
}

// Past the hub's sessions per address, HTTP-FLV and WebSocket-FLV viewers
// get 429 with the reason; relay pulls are not counted.
func TestViewersPerIP(t *testing.T) {
	up := &countingUpstream{}
	e := start(t, hub.Config{MaxSessionsPerIP: 1, Upstream: up})
	first, err := http.Get(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	if first.StatusCode != 200 {
		t.Fatalf("first viewer: %s", first.Status)
	}
	second, err := http.Get(e.url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(second.Body)
	second.Body.Close()
	if second.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "too many viewers from this address") {
		t.Fatalf("second viewer: %s %q, want 429 with the reason", second.Status, body)
	}
	// Refused before anything is set up: a stream held elsewhere is not
	// pulled for a viewer who cannot have it.
	elsewhere, err := http.Get(strings.Replace(e.url, "cam", "elsewhere", 1))
	if err != nil {
		t.Fatal(err)
	}
	elsewhere.Body.Close()
	if elsewhere.StatusCode != http.StatusTooManyRequests || up.pulls.Load() != 0 {
		t.Fatalf("viewer of a stream held elsewhere: %s after %d pulls, want 429 and none", elsewhere.Status, up.pulls.Load())
	}
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(e.url, "http"), nil)
	if err == nil {
		ws.Close()
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("WebSocket-FLV viewer: %v, %v; want 429", resp, err)
	}
	pull, err := http.Get(e.url + "?pull")
	if err != nil {
		t.Fatal(err)
	}
	pull.Body.Close()
	if pull.StatusCode != 200 {
		t.Fatalf("relay pull: %s", pull.Status)
	}
	if got := e.h.SessionRefusals(); got["flv"] != 2 || got["ws-flv"] != 1 {
		t.Fatalf("refusals %v", got)
	}
}

// countingUpstream counts the relay pulls a hub asks for, and has no
// stream.
type countingUpstream struct{ pulls atomic.Int32 }

func (u *countingUpstream) Pull(streamname.Name, []string) error {
	u.pulls.Add(1)
	return errors.New("no node has it")
}

// A WebSocket-FLV viewer gets the FLV header, then tags, in binary
// messages, as a ws-flv session.
func TestWebSocketFLV(t *testing.T) {
	e := start(t, hub.Config{})
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(e.url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var all []byte
	for len(all) < 13+11 {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.BinaryMessage {
			t.Fatalf("message of type %d", typ)
		}
		all = append(all, msg...)
	}
	r := flv.NewReader(io.MultiReader(bytes.NewReader(all), &wsBody{c: ws}))
	if hasVideo, _, err := r.ReadHeader(); err != nil || !hasVideo {
		t.Fatalf("FLV header: video %v, %v", hasVideo, err)
	}
	if got := tags(t, r, 2); !bytes.Equal(got, []byte{0, 1}) {
		t.Fatalf("first video tags %v", got)
	}
	if s := e.h.Sessions(); len(s) != 1 || s[0].Protocol != "ws-flv" {
		t.Fatalf("sessions %+v, want one ws-flv viewer", s)
	}
}

// wsBody reads the binary messages of a WebSocket as one byte stream.
type wsBody struct {
	c    *websocket.Conn
	rest []byte
}

func (w *wsBody) Read(p []byte) (int, error) {
	if len(w.rest) == 0 {
		_, msg, err := w.c.ReadMessage()
		if err != nil {
			return 0, err
		}
		w.rest = msg
	}
	n := copy(p, w.rest)
	w.rest = w.rest[n:]
	return n, nil
}
