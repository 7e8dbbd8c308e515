package httpflv

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
)

// authorizer admits a player with ?sig=good, refuses one without a sig
// (401) and one with another (403), and remembers what it was asked.
type authorizer struct {
	mu   sync.Mutex
	reqs []auth.Request
}

func (a *authorizer) Check(_ context.Context, req auth.Request) (auth.Grant, error) {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	switch {
	case !req.Params.Has("sig"):
		return auth.Grant{}, auth.ErrSigRequired
	case req.Params.Get("sig") != "good":
		return auth.Grant{}, auth.ErrBadSig
	}
	return auth.Grant{}, nil
}

// peers admits pulls carrying X-Test-Node.
type peers struct{}

func (peers) Verify(r *http.Request) (cluster.NodeID, error) {
	if n := r.Header.Get("X-Test-Node"); n != "" {
		return cluster.NodeID(n), nil
	}
	return "", cluster.ErrUnauthorized
}

// The server's own routes parse the name, ask the authorizer and answer
// its refusals as they are: 401, 403; relay pulls need a node's signature.
func TestRoutes(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := hub.New(hub.Config{Logger: quiet})
	pub, err := h.Publish(cam, stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: avcC}); err != nil {
		t.Fatal(err)
	}
	if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, Payload: []byte{0, 0, 0, 2, 0x65, 0x88}}); err != nil {
		t.Fatal(err)
	}
	az := &authorizer{}
	s := New(Config{Auth: az, Peers: peers{}, Logger: quiet}, h)
	mux := httpfront.NewMux()
	s.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		s.Close()
		srv.Close()
	})
	get := func(path string, header http.Header) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		return http.DefaultClient.Do(req)
	}
	for _, tc := range []struct {
		path   string
		header http.Header
		code   int
	}{
		{"/live/cam.flv", nil, http.StatusUnauthorized},
		{"/live/cam.flv?sig=bad", nil, http.StatusForbidden},
		{"/live/.cam.flv?sig=good", nil, http.StatusNotFound}, // a bad name: the authorizer is not asked
		{"/live/nothing.flv?sig=good", nil, http.StatusNotFound},
		{"/live/cam.mp4?sig=good", nil, http.StatusNotFound}, // not the server's
		{cluster.PullPath + "live/cam", nil, http.StatusForbidden},
		{cluster.PullPath + "live/.cam", http.Header{"X-Test-Node": {"edge"}}, http.StatusBadRequest},
	} {
		resp, err := get(tc.path, tc.header)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
	}
	az.mu.Lock()
	if len(az.reqs) != 3 {
		t.Errorf("the authorizer was asked %d times, want 3", len(az.reqs))
	} else if r := az.reqs[0]; r.Action != auth.Play || r.Name != cam || r.Protocol != "http-flv" || !r.Remote.IsLoopback() {
		t.Errorf("authorizer asked %+v", r)
	}
	az.mu.Unlock()

	// Admitted: the stream plays; a signed pull gets it too.
	for _, tc := range []struct {
		path   string
		header http.Header
	}{
		{"/live/cam.flv?sig=good", nil},
		{cluster.PullPath + "live/cam", http.Header{"X-Test-Node": {"edge"}}},
	} {
		resp, err := get(tc.path, tc.header)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", tc.path, resp.Status)
		}
		if _, _, err := flv.NewReader(resp.Body).ReadHeader(); err != nil {
			t.Errorf("GET %s: %v", tc.path, err)
		}
		resp.Body.Close()
	}
}
