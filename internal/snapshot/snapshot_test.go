package snapshot

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// published is a hub with live/cam publishing 2 s of 320x240 H.264 made by
// ffmpeg, and its publisher (to end the stream).
func published(t *testing.T) (*hub.Hub, *stream.Publisher) {
	t.Helper()
	testutil.Need(t, "ffmpeg")
	file := filepath.Join(t.TempDir(), "in.flv")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-t", "2", "-g", "25", "-c:v", "libx264", "-f", "flv", file).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := hub.New(hub.Config{})
	t.Cleanup(h.Close)
	pub, err := h.Publish("live/cam", stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	r := flv.NewReader(f)
	if _, _, err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.WritePacket(&p); err != nil {
			t.Fatal(err)
		}
	}
	return h, pub
}

// server serves s's routes.
func server(t *testing.T, s *Service) string {
	t.Helper()
	mux := httpfront.NewMux()
	s.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// A snapshot is a JPEG of the stream's size, or of a width asked for; a
// stream that is not live is 404, a width off the list 400.
func TestSnapshot(t *testing.T) {
	h, _ := published(t)
	base := server(t, New(Config{}, h))
	code, b := get(t, base+"/live/cam/snapshot.jpg")
	if code != 200 {
		t.Fatalf("snapshot: %d %s", code, b)
	}
	img, err := jpeg.DecodeConfig(bytes.NewReader(b))
	if err != nil || img.Width != 320 || img.Height != 240 {
		t.Fatalf("snapshot: %dx%d, %v; want a 320x240 JPEG", img.Width, img.Height, err)
	}
	code, b = get(t, base+"/live/cam/snapshot.jpg?width=160")
	if img, err := jpeg.DecodeConfig(bytes.NewReader(b)); code != 200 || err != nil || img.Width != 160 || img.Height != 120 {
		t.Fatalf("width=160: %d, %dx%d, %v", code, img.Width, img.Height, err)
	}
	if code, _ := get(t, base+"/live/nothing/snapshot.jpg"); code != 404 {
		t.Errorf("a stream that is not live: %d, want 404", code)
	}
	if code, _ := get(t, base+"/live/cam/snapshot.jpg?width=333"); code != 400 {
		t.Errorf("width=333: %d, want 400", code)
	}
}

// However many ask at once, a stream's snapshot is decoded once a second.
func TestSnapshotCoalesced(t *testing.T) {
	h, _ := published(t)
	s := New(Config{}, h)
	base := server(t, s)
	var wg sync.WaitGroup
	codes := make(chan int, 100)
	for range 100 {
		wg.Go(func() {
			resp, err := http.Get(base + "/live/cam/snapshot.jpg")
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a snapshot request answered %d", c)
		}
	}
	if n := s.Decodes(); n != 1 {
		t.Errorf("100 requests at once made %d decodes, want 1", n)
	}
}

// refuser refuses every player.
type refuser struct{}

func (refuser) Check(context.Context, auth.Request) (auth.Grant, error) {
	return auth.Grant{}, &auth.Error{Status: http.StatusForbidden, Reason: "not for you"}
}

// Play authorization applies, as to any player.
func TestSnapshotAuthorized(t *testing.T) {
	h := hub.New(hub.Config{})
	defer h.Close()
	base := server(t, New(Config{Auth: refuser{}}, h))
	if code, _ := get(t, base+"/live/cam/snapshot.jpg"); code != http.StatusForbidden {
		t.Errorf("refused player: %d, want 403", code)
	}
	if code, _ := get(t, base+InternalPath+"live/cam"); code != http.StatusForbidden {
		t.Errorf("the internal route without Peers: %d, want 403", code)
	}
}

// A node without the stream asks its owner's internal route.
func TestSnapshotFromOwner(t *testing.T) {
	h, _ := published(t)
	peers := fakePeers{}
	owner := server(t, New(Config{Peers: peers}, h))
	empty := hub.New(hub.Config{})
	defer empty.Close()
	edge := server(t, New(Config{Peers: peers, Owner: func(_ context.Context, name streamname.Name) (string, error) {
		if name != "live/cam" {
			return "", errors.New("no owner")
		}
		return owner[len("http://"):], nil
	}}, empty))
	code, b := get(t, edge+"/live/cam/snapshot.jpg?width=320")
	if img, err := jpeg.DecodeConfig(bytes.NewReader(b)); code != 200 || err != nil || img.Width != 320 {
		t.Fatalf("snapshot through the owner: %d, %v", code, err)
	}
	if code, _ := get(t, edge+"/live/other/snapshot.jpg"); code != 404 {
		t.Errorf("a stream no node has: %d, want 404", code)
	}
}

// fakePeers lets every request through, unsigned.
type fakePeers struct{}

func (fakePeers) Do(req *http.Request) (*http.Response, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return c.Do(req)
}
func (fakePeers) Verify(*http.Request) (cluster.NodeID, error) { return "peer", nil }
