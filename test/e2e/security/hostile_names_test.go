//go:build unix

package security

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
)

// nameMarker is in every hostile name, so anything they create on disk or
// echo into the log is found.
const nameMarker = "mcx7q"

// hostileNames are stream names that must reach no file path, Redis key or
// log line: traversal, encoded traversal, separators, absolute paths, NUL,
// control bytes and length.
var hostileNames = []struct{ what, app, key string }{
	{"dot dot", "live", ".."},
	{"dot dot slash", "live", "../" + nameMarker},
	{"deep traversal", "live", "../../../../tmp/" + nameMarker},
	{"encoded dot dot", "live", "%2e%2e"},
	{"encoded traversal", "live", "%2e%2e%2f" + nameMarker},
	{"backslash", "live", "..\\" + nameMarker},
	{"absolute path", "live", "/tmp/" + nameMarker},
	{"NUL", "live", nameMarker + "\x00.txt"},
	{"control bytes", "live", nameMarker + "\r\n\x1b[31m"},
	{"300+ bytes", "live", strings.Repeat(nameMarker, 61)},
	{"dot dot app", "..", nameMarker},
	// (A single slash around an RTMP app is trimmed, as clients send
	// "live/"; "/tmp" would name the harmless stream tmp/KEY.)
	{"absolute app", "/tmp/" + nameMarker, "stream"},
	{"300+ byte app", strings.Repeat(nameMarker, 61), "stream"},
}

// TestHostileNames publishes and plays hostile stream names over RTMP and
// asks for them over HTTP-FLV and HLS: every one is refused, none reaches
// the disk, and the log never echoes one raw.
func TestHostileNames(t *testing.T) {
	e := startHostile(t)
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", e.p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	before := listTree(t, cwd)

	for i, n := range hostileNames {
		t.Run("rtmp publish "+n.what, func(t *testing.T) {
			_, err := publishGo(t, loopbackIP(40, i), e.p.RTMPAddr, n.app, n.key, rtmp.DefaultChunkSize)
			if err == nil {
				t.Fatalf("publish %q/%q accepted", n.app, n.key)
			}
			if !errors.Is(err, rtmp.ErrRefused) {
				t.Logf("publish %q/%q: %v", n.app, n.key, err) // closed without a status: also a refusal
			}
		})
		t.Run("rtmp play "+n.what, func(t *testing.T) {
			conn, err := dialFrom(loopbackIP(41, i), e.p.RTMPAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			c, err := rtmp.NewClient(conn)
			if err == nil {
				err = c.Connect(n.app, "rtmp://localhost/"+url.PathEscape(n.app))
			}
			if err == nil {
				err = c.Play(n.key)
			}
			if err == nil {
				t.Fatalf("play %q/%q accepted", n.app, n.key)
			}
		})
		t.Run("http "+n.what, func(t *testing.T) {
			app, key := url.PathEscape(n.app), url.PathEscape(n.key)
			for _, target := range []string{
				"/" + app + "/" + key + ".flv",
				"/" + app + "/" + key + ".m3u8",
				"/" + app + "/" + key + "/index.m3u8",
				"/" + app + "/" + key + "/seg0.mp4",
				"/play/" + app + "/" + key + ".flv",
				"/api/v1/streams/" + app + "/" + key,
			} {
				code, body := rawHTTP(t, e.httpAddr(), target)
				if code != 400 && code != 404 {
					t.Errorf("GET %q: %d, want 400 or 404\n%.200s", target, code, body)
				}
			}
		})
	}
	// The same names written raw into the request line, as a client that
	// does not escape them would.
	t.Run("http raw", func(t *testing.T) {
		for _, target := range []string{
			"/live/...flv", "/live/../" + nameMarker + ".flv", "/live/%2e%2e.flv", "/live/%2E%2E.m3u8",
			"/live/..\\" + nameMarker + ".flv", "/live/" + nameMarker + "%00.flv", "/live/%2e%2e/index.m3u8",
			"/live/" + strings.Repeat(nameMarker, 61) + ".flv", "/live/" + strings.Repeat(nameMarker, 61) + "/index.m3u8",
			"/%2e%2e/" + nameMarker + ".flv", "/live/..%2f" + nameMarker + "/index.m3u8",
		} {
			code, body := rawHTTP(t, e.httpAddr(), target)
			if code != 400 && code != 404 {
				t.Errorf("GET %q: %d, want 400 or 404\n%.200s", target, code, body)
			}
		}
	})
	e.healthy(t)

	// Nothing was created: not in the server's working directory, not in
	// the temporary directory.
	if after := listTree(t, cwd); after != before {
		t.Errorf("the server's working directory changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	ents, err := os.ReadDir(os.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		if strings.Contains(ent.Name(), nameMarker) {
			t.Errorf("%s created", filepath.Join(os.TempDir(), ent.Name()))
		}
	}
	// The log quotes at most a bounded, escaped part of a rejected name.
	logs := e.p.Stderr.String()
	if strings.Contains(logs, strings.Repeat(nameMarker, 14)) {
		t.Error("the log echoes a 300-byte name")
	}
	if strings.ContainsAny(logs, "\x00\x1b") {
		t.Error("the log holds raw control bytes from a name")
	}
	if !strings.Contains(logs, "bad name") {
		t.Error("no refusal logged")
	}
	e.backToBaseline(t)
}

// listTree lists the files under dir with their sizes, one per line.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // vanished meanwhile
		}
		if info, err := d.Info(); err == nil {
			fmt.Fprintf(&b, "%s %d\n", path, info.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
