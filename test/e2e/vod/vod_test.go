//go:build unix

package vod

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// durationOf returns what ffprobe reads as the duration of path, a file
// or a URL.
func durationOf(t *testing.T, path string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatalf("ffprobe %s: duration %q", path, out)
	}
	return d
}

func TestVODProgressiveMP4(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lib := filepath.Join(dir, "vod")
	if err := os.Mkdir(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(lib, "x.mp4")
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", e2eutil.Input(t),
		"-t", "8", "-c", "copy", "-movflags", "+faststart", src).CombinedOutput(); err != nil {
		t.Fatalf("make x.mp4: %v: %s", err, out)
	}
	secret := filepath.Join(dir, "secret.mp4")
	os.WriteFile(secret, []byte("outside the library"), 0o644)
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := e2eutil.StartProcess(t, "--vod-dir", lib, "--vod-max-upload", "8MiB")

	t.Run("listed", func(t *testing.T) {
		code, body := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/vod")
		var got struct {
			Assets []struct {
				Name string `json:"name"`
				Size int64  `json:"size"`
				MP4  string `json:"mp4"`
			} `json:"assets"`
		}
		if err := json.Unmarshal(body, &got); err != nil || code != 200 || len(got.Assets) != 1 ||
			got.Assets[0].Name != "x" || got.Assets[0].Size != int64(len(want)) || got.Assets[0].MP4 != "/vod/x.mp4" {
			t.Errorf("GET /api/v1/vod: %d %s", code, body)
		}
	})
	t.Run("whole file", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(p.HTTPURL + "/vod/x.mp4")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want) || resp.Header.Get("Content-Type") != "video/mp4" {
			t.Errorf("GET /vod/x.mp4: %d %v, %d bytes, want %d bytes equal to the file", resp.StatusCode, err, len(body), len(want))
		}
	})
	t.Run("ranges", func(t *testing.T) {
		n := len(want)
		for _, r := range [][2]int{{0, 0}, {0, 1023}, {1000, 1999}, {n / 2, n/2 + 65535}, {n - 100, n - 1}} {
			req, _ := http.NewRequest("GET", p.HTTPURL+"/vod/x.mp4", nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[r[0]:r[1]+1]) ||
				resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], n) {
				t.Errorf("Range %d-%d: %d, %d bytes, Content-Range %q", r[0], r[1], resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
			}
		}
		// curl -r, as users check it.
		if _, err := exec.LookPath("curl"); err == nil {
			out, err := exec.Command("curl", "-s", "-r", "100-199", "-o", "-", "-w", "\n%{http_code}", p.HTTPURL+"/vod/x.mp4").Output()
			if err != nil || !bytes.HasSuffix(out, []byte("\n206")) || !bytes.Equal(bytes.TrimSuffix(out, []byte("\n206")), want[100:200]) {
				t.Errorf("curl -r 100-199: %v, %d bytes", err, len(out))
			}
		}
	})
	t.Run("plays", func(t *testing.T) {
		if got, src := durationOf(t, p.HTTPURL+"/vod/x.mp4"), durationOf(t, src); got < src-1 || got > src+1 {
			t.Errorf("duration over HTTP %.2f s, source %.2f s", got, src)
		}
		e2eutil.ProbeCodecs(t, p.HTTPURL+"/vod/x.mp4")
	})
	t.Run("plays as HLS", func(t *testing.T) {
		if got, src := durationOf(t, p.HTTPURL+"/vod/x/index.m3u8"), durationOf(t, src); got < src-1 || got > src+1 {
			t.Errorf("HLS duration %.2f s, source %.2f s", got, src)
		}
		e2eutil.ProbeCodecs(t, p.HTTPURL+"/vod/x/index.m3u8")
	})
	t.Run("upload, play, delete", func(t *testing.T) {
		code, body := upload(t, p.HTTPURL, "up.mp4", src)
		if code != http.StatusCreated {
			t.Fatalf("upload: %d %s", code, body)
		}
		if got, err := os.ReadFile(filepath.Join(lib, "up.mp4")); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("uploaded file: %v, %d bytes, want the %d bytes sent", err, len(got), len(want))
		}
		if d := durationOf(t, p.HTTPURL+"/vod/up/index.m3u8"); d < 7 || d > 9 {
			t.Errorf("uploaded asset plays %.2f s, want 8", d)
		}
		// Over the limit, or not media: refused, and the library is unchanged.
		if code, body := uploadBody(t, p.HTTPURL, "huge.mp4", io.LimitReader(zeros{}, 9<<20)); code != http.StatusRequestEntityTooLarge {
			t.Errorf("9 MiB upload with an 8 MiB limit: %d %s", code, body)
		}
		if code, body := uploadBody(t, p.HTTPURL, "up.mp4", strings.NewReader("not a video at all")); code != http.StatusUnsupportedMediaType {
			t.Errorf("upload of text over up.mp4: %d %s", code, body)
		}
		if got, _ := os.ReadFile(filepath.Join(lib, "up.mp4")); !bytes.Equal(got, want) {
			t.Error("a refused upload replaced up.mp4")
		}
		req, _ := http.NewRequest("DELETE", p.HTTPURL+"/api/v1/vod/up", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %v %v", err, resp)
		}
		resp.Body.Close()
		if code, _ := e2eutil.HTTPGet(t, p.HTTPURL+"/vod/up.mp4"); code != 404 {
			t.Errorf("deleted asset: %d", code)
		}
		entries, _ := os.ReadDir(lib)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) != 1 || names[0] != "x.mp4" {
			t.Errorf("library holds %v, want x.mp4 alone (no temporary files left)", names)
		}
	})
	t.Run("nothing outside the library", func(t *testing.T) {
		for _, file := range []string{"..%2fevil.mp4", "%2e%2e%2fevil.mp4", "..%5cevil.mp4", ".evil.mp4", "evil.txt", "evil", "a%00.mp4"} {
			code, body := uploadBody(t, p.HTTPURL, file, strings.NewReader("payload"))
			if code != 400 && code != 404 {
				t.Errorf("PUT /api/v1/vod/%s: %d %s", file, code, body)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "evil.mp4")); err == nil {
			t.Error("an upload was written outside the library")
		}
		for _, path := range []string{"/vod/..%2fsecret/index.m3u8", "/vod/%2e%2e/secret.mp4", "/vod/x/..%2f..%2fsecret.mp4", "/api/v1/vod/..%2fsecret"} {
			code, body := e2eutil.HTTPGet(t, p.HTTPURL+path)
			if (code != 400 && code != 404) || strings.Contains(string(body), "outside") {
				t.Errorf("GET %s: %d %q", path, code, body)
			}
		}
		for _, path := range []string{"/vod/..%2fsecret.mp4", "/vod/%2e%2e%2fsecret.mp4", "/vod/secret.mp4", "/vod/x.mp4%00", "/vod/.x.mp4"} {
			code, body := e2eutil.HTTPGet(t, p.HTTPURL+path)
			if (code != 400 && code != 404) || strings.Contains(string(body), "outside") {
				t.Errorf("GET %s: %d %q", path, code, body)
			}
		}
	})
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
