package httpfront

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSafePaths(t *testing.T) {
	h := SafePaths(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/", true},
		{"/live/stream.flv", true},
		{"/live/stream/index.m3u8", true},
		{"/socket.io/", true},
		{"/socket.io/socket.io.js", true},
		{"/live/a..b.flv", true},
		{"/live/..", false},
		{"/live/../etc/passwd", false},
		{"/../etc/passwd", false},
		{"/live/./x", false},
		{"/live/stream/..", false},
		{"/socket.io/..", false},
		{"/live/a\\b.flv", false},
		{"/live/..\\..\\x", false},
		{"/live/a\x00b.flv", false},
		{"/live/a\nb.flv", false},
		{"/live/a\x7fb.flv", false},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.Path = tc.path
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if got := rec.Code == http.StatusTeapot; got != tc.ok {
			t.Errorf("%q: status %d, want passed on = %v", tc.path, rec.Code, tc.ok)
		}
	}
}
