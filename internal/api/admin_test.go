package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
)

func TestAdminEndpoints(t *testing.T) {
	h := hub.New(hub.Config{})
	defer h.Close()
	kicked := false
	id, end := h.StartSession(hub.Session{Kind: hub.KindPlay, Protocol: "rtmp", Stream: "live/x", RemoteAddr: "192.0.2.1:5000"}, func() { kicked = true })
	defer end()

	serve := func(token, remote, method, path, auth string) int {
		mux := httpfront.NewMux()
		New(h, nil, nil, nil, map[string]any{}, token).Register(mux)
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = remote
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", method, path)
		}
		return w.Code
	}
	const token = "admin-token-of-the-tests"
	cases := []struct {
		name, token, remote, method, path, auth string
		want                                    int
	}{
		{"no token set: loopback lists", "", "127.0.0.1:1", "GET", "/api/v1/sessions", "", 200},
		{"no token set: others refused", "", "192.0.2.9:1", "GET", "/api/v1/sessions", "", 403},
		{"no token set: others cannot kick", "", "[2001:db8::1]:1", "DELETE", "/api/v1/sessions/" + id, "", 403},
		{"token set: none given", token, "127.0.0.1:1", "GET", "/api/v1/sessions", "", 401},
		{"token set: wrong one", token, "192.0.2.9:1", "GET", "/api/v1/sessions", "Bearer not-the-admin-token", 401},
		{"token set: not bearer", token, "192.0.2.9:1", "GET", "/api/v1/sessions", "Basic " + token, 401},
		{"token set: lists", token, "192.0.2.9:1", "GET", "/api/v1/sessions", "Bearer " + token, 200},
		{"token set: kick a stream without a publisher", token, "192.0.2.9:1", "DELETE", "/api/v1/streams/live/x", "Bearer " + token, 404},
		{"token set: unauthorised kick", token, "192.0.2.9:1", "DELETE", "/api/v1/sessions/" + id, "", 401},
		{"public: the API's description", token, "192.0.2.9:1", "GET", "/api/v1/openapi.json", "", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := serve(tc.token, tc.remote, tc.method, tc.path, tc.auth); got != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.path, got, tc.want)
			}
		})
	}
	if kicked {
		t.Fatal("a refused request kicked the session")
	}
	if got := serve(token, "192.0.2.9:1", "DELETE", "/api/v1/sessions/"+id, "Bearer "+token); got != http.StatusNoContent || !kicked {
		t.Errorf("kick with the token: %d, kicked %v", got, kicked)
	}
}
