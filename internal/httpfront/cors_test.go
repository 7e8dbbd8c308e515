package httpfront

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCORS(t *testing.T) {
	served := false
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served = true; w.WriteHeader(http.StatusTeapot) })
	do := func(origins []string, method, origin, reqMethod string) *httptest.ResponseRecorder {
		served = false
		r := httptest.NewRequest(method, "/live/cam.flv", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if reqMethod != "" {
			r.Header.Set("Access-Control-Request-Method", reqMethod)
		}
		w := httptest.NewRecorder()
		CORS(origins, next).ServeHTTP(w, r)
		return w
	}
	const page = "https://player.example"
	cases := []struct {
		name              string
		origins           []string
		method, origin    string
		reqMethod         string
		code              int
		allow, vary, meth string
		served            bool
	}{
		{"no policy", nil, http.MethodGet, page, "", http.StatusTeapot, "", "", "", true},
		{"any origin", []string{"*"}, http.MethodGet, page, "", http.StatusTeapot, "*", "", "", true},
		{"listed origin", []string{page}, http.MethodGet, page, "", http.StatusTeapot, page, "Origin", "", true},
		{"other origin", []string{page}, http.MethodGet, "https://evil.example", "", http.StatusTeapot, "", "Origin", "", true},
		{"preflight, listed", []string{page}, http.MethodOptions, page, "POST", http.StatusNoContent, page, "Origin",
			"GET, HEAD, POST, PUT, DELETE, OPTIONS", false},
		{"preflight, any", []string{"*"}, http.MethodOptions, page, "DELETE", http.StatusNoContent, "*", "",
			"GET, HEAD, POST, PUT, DELETE, OPTIONS", false},
		{"preflight, other origin", []string{page}, http.MethodOptions, "https://evil.example", "POST", http.StatusForbidden, "", "Origin", "", false},
		{"preflight, no policy", nil, http.MethodOptions, page, "POST", http.StatusForbidden, "", "", "", false},
		{"OPTIONS that is no preflight", []string{page}, http.MethodOptions, page, "", http.StatusTeapot, page, "Origin", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := do(tc.origins, tc.method, tc.origin, tc.reqMethod)
			h := w.Header()
			if w.Code != tc.code || served != tc.served {
				t.Errorf("status %d, served %v; want %d, %v", w.Code, served, tc.code, tc.served)
			}
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allow {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tc.allow)
			}
			if got := h.Get("Vary"); got != tc.vary {
				t.Errorf("Vary %q, want %q", got, tc.vary)
			}
			if got := h.Get("Access-Control-Allow-Methods"); got != tc.meth {
				t.Errorf("Access-Control-Allow-Methods %q, want %q", got, tc.meth)
			}
			if tc.code == http.StatusNoContent {
				if h.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type, Range" || h.Get("Access-Control-Max-Age") != "86400" {
					t.Errorf("preflight headers %v", h)
				}
				if h.Get("Access-Control-Allow-Credentials") != "" {
					t.Error("credentials allowed")
				}
			}
		})
	}
}

func TestAllowOrigin(t *testing.T) {
	if allow := AllowOrigin([]string{"https://a.example"}); !allow("https://a.example") || allow("https://b.example") || allow("") {
		t.Error("a listed origin: wrong answers")
	}
	if !AllowOrigin([]string{"*"})("https://b.example") {
		t.Error(`"*" refuses an origin`)
	}
	if AllowOrigin(nil)("https://a.example") {
		t.Error("no policy allows an origin")
	}
}
