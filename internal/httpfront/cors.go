package httpfront

import (
	"net/http"
	"slices"
	"sync/atomic"
)

// CORS lets pages of the allowed origins read responses in a browser
// ("*": any origin), and answers their preflight requests: 204, or 403
// for another origin. Credentials (cookies) are never allowed: the admin
// API takes a bearer token, which a page must hold itself.
func CORS(origins []string, next http.Handler) http.Handler {
	return cors(func() []string { return origins }, next)
}

// Origins is a CORS policy that can change while the node runs (a
// reload): the origins of CORS and AllowOrigin, read at each request.
type Origins struct{ list atomic.Pointer[[]string] }

// NewOrigins returns a policy allowing origins.
func NewOrigins(origins []string) *Origins {
	o := &Origins{}
	o.Set(origins)
	return o
}

// Set replaces the allowed origins.
func (o *Origins) Set(origins []string) {
	c := slices.Clone(origins)
	o.list.Store(&c)
}

// Get returns the allowed origins.
func (o *Origins) Get() []string { return *o.list.Load() }

// Allow reports whether a page of origin may use the node (AllowOrigin).
func (o *Origins) Allow(origin string) bool { return AllowOrigin(o.Get())(origin) }

// cors is CORS with the origins read at each request.
func cors(get func() []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origins := get()
		anyOrigin := slices.Contains(origins, "*")
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
