//go:build unix

package security

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileHTTPPaths tries path traversal on every route that serves
// something named by the path: HTTP-FLV (/APP/STREAM.flv), HLS
// (/APP/STREAM.m3u8 and /APP/STREAM/FILE), the Socket.IO client library
// (/socket.io/FILE, read from --web-modules), play redirects and the
// stream API. Requests are written raw, so no client cleans the path.
// Every answer is 400 or 404, or a redirect to a clean path on this server
// that then answers 400 or 404, and no file outside is ever served.
func TestHostileHTTPPaths(t *testing.T) {
	// A modules directory with the client library and, around it, secrets
	// that traversal would reach.
	dir := t.TempDir()
	mods := filepath.Join(dir, "node_modules")
	dist := filepath.Join(mods, "socket.io-client", "dist")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		t.Fatal(err)
	}
	const client, secret = "/* the socket.io client */", "SECRET-4f1d9c2e"
	for path, content := range map[string]string{
		filepath.Join(dist, "socket.io.js"):                     client,
		filepath.Join(dir, "secret.txt"):                        secret,
		filepath.Join(mods, "secret.txt"):                       secret,
		filepath.Join(mods, "socket.io-client", "secret.txt"):   secret,
		filepath.Join(mods, "socket.io-client", "package.json"): secret,
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Skip("no /etc/passwd to look for")
	}
	passwdLine, _, _ := strings.Cut(string(passwd), "\n")

	e := startHostile(t, "--web-modules", mods)
	addr := e.httpAddr()
	if code, body := rawHTTP(t, addr, "/socket.io/socket.io.js"); code != 200 || body != client {
		t.Fatalf("the client library: %d %q", code, body)
	}

	traversals := []string{
		"../../../../../../../../etc/passwd",
		"..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
		"..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
		"%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
		"%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
		"..\\..\\..\\..\\..\\..\\..\\..\\etc\\passwd",
		"..%5c..%5c..%5c..%5c..%5c..%5c..%5c..%5cetc%5cpasswd",
		"%252e%252e%252f%252e%252e%252f%252e%252e%252fetc%252fpasswd",
		"....//....//....//....//etc/passwd",
		"..;/..;/..;/..;/etc/passwd",
		"..%00/..%00/etc/passwd",
		"%2e%2e%00/etc/passwd",
		"/etc/passwd",
		"%2fetc%2fpasswd",
		// The modules directory's neighbours.
		"../secret.txt", "..%2fsecret.txt", "%2e%2e%2fsecret.txt", "../../secret.txt", "..%2f..%2fsecret.txt",
		"../../../secret.txt", "..%2f..%2f..%2fsecret.txt", "..\\secret.txt", "..%5csecret.txt",
		"socket.io.js/../../secret.txt", "socket.io.js%2f..%2f..%2fsecret.txt", "../package.json", "..%2fpackage.json",
	}
	prefixes := []string{
		"/live/", "/live/stream/", "/socket.io/", "/socket.io/socket.io.js/", "/play/live/",
		"/api/v1/streams/live/", "/", "/live/stream.flv/", "/events-demo/",
	}
	suffixes := []string{"", ".flv", ".m3u8", "/index.m3u8"}
	var targets []string
	for _, p := range prefixes {
		for _, tr := range traversals {
			for _, s := range suffixes {
				targets = append(targets, p+tr+s)
			}
		}
	}
	// Request targets that are not origin-form paths.
	targets = append(targets,
		"http://localhost/../../../../etc/passwd", "http://localhost/socket.io/../../secret.txt",
		"../../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "//etc/passwd", "///etc/passwd",
	)
	t.Logf("%d requests", len(targets))
	codes := map[int]int{}
	for _, target := range targets {
		code, body := rawHTTP(t, addr, target)
		codes[code]++
		for hops := 0; hops < 3 && (code == 301 || code == 302 || code == 307 || code == 308); hops++ {
			// A redirect is fine only to a clean path here, which then
			// answers no better.
			loc, _, _ := strings.Cut(strings.TrimPrefix(body, "Location: "), "\n")
			u, err := url.Parse(loc)
			if err != nil || u.Host != "" || !strings.HasPrefix(u.Path, "/") || !cleanPath(u.Path) {
				t.Errorf("GET %q: %d to %q", target, code, loc)
				break
			}
			target = u.RequestURI()
			code, body = rawHTTP(t, addr, target)
		}
		if code != 400 && code != 404 {
			t.Errorf("GET %q: %d, want 400 or 404\n%.200s", target, code, body)
		}
		if strings.Contains(body, passwdLine) || strings.Contains(body, "root:") || strings.Contains(body, secret) {
			t.Fatalf("GET %q served a file from outside:\n%.200s", target, body)
		}
	}
	t.Logf("answers: %v", codes)
	e.healthy(t)
	e.backToBaseline(t)
}

// cleanPath reports whether p has no "." or ".." segment.
func cleanPath(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
