package httpfront

import (
	"net/http"
	"strings"
)

// SafePaths answers 400 to a request whose path, once decoded, has a "."
// or ".." segment, a backslash or a control byte, before any route sees
// it. Without it the mux would redirect dot segments to the cleaned path;
// no route serves files by path, but such a request is never a player's.
func SafePaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !safePath(r.URL.Path) {
			http.Error(w, "bad request path", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func safePath(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
