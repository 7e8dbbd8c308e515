package httpfront

import (
	"net/http"
	"slices"
)

// CORS lets pages of the allowed origins read responses in a browser
// ("*": any origin), and answers their preflight requests: 204, or 403
// for another origin. Credentials (cookies) are never allowed: the admin
// API takes a bearer token, which a page must hold itself.
func CORS(origins []string, next http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		origin := r.Header.Get("Origin")
		allowed := anyOrigin || (origin != "" && slices.Contains(origins, origin))
		switch {
		case anyOrigin:
			h.Set("Access-Control-Allow-Origin", "*")
		case allowed:
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
		case len(origins) > 0:
			h.Add("Vary", "Origin") // the answer differs by origin
		}
		if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Range")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// AllowOrigin reports whether a page of origin may use the node, under
// the same policy as CORS: for servers that check an Origin themselves,
// such as a WebSocket upgrade.
func AllowOrigin(origins []string) func(origin string) bool {
	return func(o string) bool {
		return slices.Contains(origins, "*") || slices.Contains(origins, o)
	}
}
