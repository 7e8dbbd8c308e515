// Package web serves meshcast's dashboard: the pages built from web/ by
// "npm run build" (esbuild) into dist/, embedded in the binary. A binary
// built before the dashboard was says so at / rather than failing.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed all:dist
var dist embed.FS

// AssetPrefix is where the dashboard's scripts and styles are served.
const AssetPrefix = "/ui/"

// Built reports whether the binary carries the dashboard.
func Built() bool {
	_, err := fs.Stat(dist, "dist/index.html")
	return err == nil
}

// Page serves the dashboard's page, which picks its view from the URL:
// the streams at /, a player at /watch/APP/STREAM, the cluster at
// /cluster, publishing help at /publish. notBuilt answers instead when
// the binary carries no dashboard.
func Page(notBuilt http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := dist.ReadFile("dist/index.html")
		if err != nil {
			notBuilt(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; style-src 'self'; connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		w.Write(b)
	}
}

// Assets serves GET /ui/FILE: the built scripts and styles. Chunk names
// carry a hash of their content, so they may be cached for good; main.js
// and main.css keep their names and are revalidated.
func Assets() http.Handler {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // dist is embedded: it exists
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix(strings.TrimSuffix(AssetPrefix, "/"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		if name == "index.html" || name == ".gitkeep" || r.URL.Path != "/"+name {
			http.NotFound(w, r)
			return
		}
		if strings.HasPrefix(name, "chunk-") {
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
}
