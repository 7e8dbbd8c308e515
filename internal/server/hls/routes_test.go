package hls

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/testutil"
)

// refuseAll refuses every player for want of a signed URL.
type refuseAll struct{ asked []auth.Request }

func (r *refuseAll) Check(_ context.Context, req auth.Request) (auth.Grant, error) {
	r.asked = append(r.asked, req)
	return auth.Grant{}, auth.ErrSigRequired
}

// The server's routes: /APP/STREAM.m3u8 redirects, query kept, and every
// file of /APP/STREAM/ asks the authorizer first.
func TestRoutes(t *testing.T) {
	az := &refuseAll{}
	s := New(Config{Auth: az, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, &testutil.Streams{})
	defer s.Close()
	mux := httpfront.NewMux()
	s.Register(mux)
	do := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w
	}
	if w := do("/live/cam.m3u8?expires=1&sig=x"); w.Code != http.StatusFound || w.Header().Get("Location") != "/live/cam/index.m3u8?expires=1&sig=x" {
		t.Errorf("shortcut: %d to %q", w.Code, w.Header().Get("Location"))
	}
	if w := do("/live/.cam.m3u8"); w.Code != http.StatusNotFound {
		t.Errorf("shortcut with a bad name: %d, want 404", w.Code)
	}
	for _, file := range []string{"index.m3u8", "master.m3u8", "seg1.mp4"} {
		if w := do("/live/cam/" + file); w.Code != http.StatusUnauthorized {
			t.Errorf("%s refused: %d, want 401", file, w.Code)
		}
	}
	if w := do("/live/.cam/index.m3u8"); w.Code != http.StatusBadRequest {
		t.Errorf("bad name: %d, want 400", w.Code)
	}
	if len(az.asked) != 3 || az.asked[0].Protocol != "hls" || az.asked[0].Action != auth.Play || az.asked[0].Name != "live/cam" {
		t.Errorf("authorizer asked %+v", az.asked)
	}
}
