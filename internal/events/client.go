package events

import (
	_ "embed"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
)

// clientFiles are the files of socket.io-client's dist directory served
// under /socket.io/, as the Node.js server serves them.
var clientFiles = map[string]string{
	"socket.io.js":             "application/javascript; charset=utf-8",
	"socket.io.min.js":         "application/javascript; charset=utf-8",
	"socket.io.esm.min.js":     "application/javascript; charset=utf-8",
	"socket.io.js.map":         "application/json; charset=utf-8",
	"socket.io.min.js.map":     "application/json; charset=utf-8",
	"socket.io.esm.min.js.map": "application/json; charset=utf-8",
}

// ClientFiles serves GET /socket.io/{file}: the Socket.IO client library
// from socket.io-client's dist directory under modules (a node_modules
// directory), read at each request. Without it, it answers 404 saying to
// install it.
func ClientFiles(modules string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		ctype, ok := clientFiles[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(modules, "socket.io-client", "dist", name))
		if err != nil {
			msg := "cannot read the Socket.IO client\n"
			if errors.Is(err, fs.ErrNotExist) {
				msg = "the Socket.IO client is not installed: run `npm ci` in meshcast's directory (or point --web-modules at a node_modules directory holding socket.io-client)\n"
			}
			http.Error(w, msg, http.StatusNotFound)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || st.IsDir() {
			http.Error(w, "cannot read the Socket.IO client\n", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Cache-Control", "public, max-age=0")
		http.ServeContent(w, r, name, st.ModTime(), f)
	})
}

//go:embed web/events-demo.html
var demoPage []byte

// DemoPage serves GET /events-demo: a page that connects and logs "hello".
func DemoPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(demoPage)
	})
}
