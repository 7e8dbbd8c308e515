package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// CheckHTTP reads the credentials from the URL and the client from
// RemoteAddr, and answers a refusal with its status and reason.
func TestCheckHTTP(t *testing.T) {
	a := newAuth(t, Config{URLSecret: secret, SignedPlayApps: []string{"live"}})
	check := func(target, remoteAddr string) (*httptest.ResponseRecorder, error) {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.RemoteAddr = remoteAddr
		w := httptest.NewRecorder()
		_, err := CheckHTTP(w, r, a, Play, cam, "hls")
		return w, err
	}
	if w, err := check("/live/cam/index.m3u8", "192.0.2.10:4000"); err == nil || w.Code != http.StatusUnauthorized ||
		!strings.Contains(w.Body.String(), "signed URL") {
		t.Errorf("unsigned: %v, %d %q; want 401", err, w.Code, w.Body)
	}
	signed := "/live/cam/index.m3u8?" + Sign(secret, Play, cam, time.Now().Add(time.Hour))
	if w, err := check(signed, "192.0.2.10:4000"); err != nil || w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Errorf("signed: %v, %d %q; want admitted, nothing written", err, w.Code, w.Body)
	}
	expired := "/live/cam/index.m3u8?" + Sign(secret, Play, cam, time.Now().Add(-time.Hour))
	if w, err := check(expired, "192.0.2.10:4000"); err == nil || w.Code != http.StatusGone {
		t.Errorf("expired: %v, %d; want 410", err, w.Code)
	}
	// No authorizer admits everybody.
	w := httptest.NewRecorder()
	if _, err := CheckHTTP(w, httptest.NewRequest(http.MethodGet, "/live/cam.flv", nil), nil, Publish, cam, "webrtc"); err != nil {
		t.Errorf("nil authorizer: %v", err)
	}
}
