package vod

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/cache"
	"github.com/meshcast/meshcast/internal/httpfront"
)

func newLibrary(t *testing.T) (*Library, string) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "lib")
	for _, d := range []string{dir, filepath.Join(dir, "sub.mp4")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(dir, "a.mp4"):        "0123456789abcdefghij",
		filepath.Join(dir, "b.mp4"):        "bb",
		filepath.Join(dir, "notes.txt"):    "not a video",
		filepath.Join(dir, ".hidden.mp4"):  "hidden",
		filepath.Join(root, "secret.mp4"):  "outside the library",
		filepath.Join(dir, "sub.mp4", "x"): "in a directory",
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A link out of the library is not followed.
	if err := os.Symlink(filepath.Join(root, "secret.mp4"), filepath.Join(dir, "link.mp4")); err != nil {
		t.Fatal(err)
	}
	return openLibrary(t, dir), dir
}

// openLibrary opens a single-node library on dir whose admin guard lets
// every request through.
func openLibrary(t *testing.T, dirs ...string) *Library {
	t.Helper()
	var stores []Storage
	for _, dir := range dirs {
		d, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		stores = append(stores, d)
	}
	c, err := cache.New(cache.Config{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l, err := New(Config{Stores: stores, Cache: c, Admin: func(h http.HandlerFunc) http.HandlerFunc { return h }, MaxUpload: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func serve(l *Library, path string, hdr ...string) *httptest.ResponseRecorder {
	return do(l, "GET", path, nil, hdr...)
}

func do(l *Library, method, path string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	mux := httpfront.NewMux()
	l.Register(mux)
	r := httptest.NewRequest(method, "http://x"+path, body)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	return w
}

func TestList(t *testing.T) {
	l, _ := newLibrary(t)
	w := serve(l, "/api/v1/vod")
	var got struct{ Assets []Asset }
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	var names []string
	for _, a := range got.Assets {
		names = append(names, a.Name)
	}
	// link.mp4 is listed (it is a regular file name) but is never served;
	// directories, hidden files and other extensions are left out.
	if strings.Join(names, ",") != "a,b" && strings.Join(names, ",") != "a,b,link" {
		t.Errorf("assets %v, want a and b", names)
	}
	if got.Assets[0].Size != 20 || got.Assets[0].MP4 != "/vod/a.mp4" {
		t.Errorf("asset a = %+v", got.Assets[0])
	}
}

func TestServeRanges(t *testing.T) {
	l, _ := newLibrary(t)
	w := serve(l, "/vod/a.mp4")
	if w.Code != 200 || w.Body.String() != "0123456789abcdefghij" || w.Header().Get("Content-Type") != "video/mp4" || w.Header().Get("Accept-Ranges") != "bytes" {
		t.Errorf("whole file: %d %v %q", w.Code, w.Header(), w.Body)
	}
	for _, c := range []struct{ rng, body, cr string }{
		{"bytes=2-5", "2345", "bytes 2-5/20"},
		{"bytes=-3", "hij", "bytes 17-19/20"},
		{"bytes=18-", "ij", "bytes 18-19/20"},
	} {
		w := serve(l, "/vod/a.mp4", "Range", c.rng)
		if w.Code != http.StatusPartialContent || w.Body.String() != c.body || w.Header().Get("Content-Range") != c.cr {
			t.Errorf("Range %s: %d %q %q", c.rng, w.Code, w.Body, w.Header().Get("Content-Range"))
		}
	}
	if w := serve(l, "/vod/a.mp4", "Range", "bytes=30-40"); w.Code != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d", w.Code)
	}
}

func TestNothingOutsideIsServed(t *testing.T) {
	l, _ := newLibrary(t)
	for _, path := range []string{
		"/vod/..%2fsecret.mp4", "/vod/%2e%2e%2fsecret.mp4", "/vod/.hidden.mp4", "/vod/link.mp4",
		"/vod/sub.mp4", "/vod/notes.txt", "/vod/missing.mp4", "/vod/a%00.mp4", "/vod/a%5c..%5csecret.mp4",
		"/vod/" + strings.Repeat("a", 200) + ".mp4",
	} {
		w := serve(l, path)
		if w.Code != http.StatusBadRequest && w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 400 or 404", path, w.Code)
		}
		if strings.Contains(w.Body.String(), "outside") || strings.Contains(w.Body.String(), "hidden") || strings.Contains(w.Body.String(), "directory") {
			t.Errorf("%s served %q", path, w.Body)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "movie_1-final.v2", strings.Repeat("x", MaxNameLen)} {
		if CheckName(ok) != nil {
			t.Errorf("CheckName(%q) refused", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", ".x", "a/b", `a\b`, "a b", "a\x00", strings.Repeat("x", MaxNameLen+1), "é"} {
		if CheckName(bad) == nil {
			t.Errorf("CheckName(%q) admitted", bad)
		}
	}
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
