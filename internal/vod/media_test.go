package vod

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meshcast/meshcast/internal/testutil"
)

// makeClip encodes a clip of secs seconds with ffmpeg into dir/name.ext
// (mp4 or flv): 320x240 H.264 at 30 fps, keyframes every 2 s, 48 kHz AAC.
func makeClip(t testing.TB, dir, file string, secs int) string {
	t.Helper()
	testutil.Need(t, "ffmpeg")
	p := filepath.Join(dir, file)
	out, err := exec.Command("ffmpeg", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(secs), "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return p
}

// probeDuration returns what ffprobe says a file lasts.
func probeDuration(t *testing.T, path string) float64 {
	t.Helper()
	testutil.Need(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatalf("ffprobe %s: %q", path, out)
	}
	return d
}

func TestIndexMP4AndFLVAgree(t *testing.T) {
	dir := t.TempDir()
	indexes := map[Kind]*Index{}
	for _, k := range []Kind{KindMP4, KindFLV} {
		p := makeClip(t, dir, "clip."+string(k), 6)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := f.Stat()
		x, err := BuildIndex(k, f, info.Size())
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		indexes[k] = x
		if x.Video == nil || x.Audio == nil || x.Video.Video == nil || x.Audio.AAC == nil {
			t.Fatalf("%s: tracks %+v", k, x)
		}
		if d := x.Duration().Seconds(); d < 5.9 || d > 6.2 {
			t.Errorf("%s: duration %v, want 6s", k, x.Duration())
		}
		keys := 0
		for _, s := range x.Video.Samples {
			if s.Key {
				keys++
			}
		}
		if len(x.Video.Samples) != 180 || keys != 3 {
			t.Errorf("%s: %d video samples, %d keyframes; want 180 and 3", k, len(x.Video.Samples), keys)
		}
	}
	if a, b := len(indexes[KindMP4].Audio.Samples), len(indexes[KindFLV].Audio.Samples); a != b {
		t.Errorf("audio frames: mp4 %d, flv %d", a, b)
	}
}

func TestHLSAndRemux(t *testing.T) {
	dir := t.TempDir()
	makeClip(t, dir, "m.mp4", 9)
	makeClip(t, dir, "f.flv", 9)
	l := openLibrary(t, dir)
	for _, name := range []string{"m", "f"} {
		w := serve(l, "/vod/"+name+"/index.m3u8")
		if w.Code != 200 || w.Header().Get("Content-Type") != "application/vnd.apple.mpegurl" {
			t.Fatalf("%s playlist: %d %s", name, w.Code, w.Body)
		}
		pl := w.Body.String()
		if !strings.Contains(pl, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(pl, "#EXT-X-ENDLIST") {
			t.Errorf("%s playlist:\n%s", name, pl)
		}
		// Segments start at keyframes, every 2 s: at least 4 s each, 3 of them.
		var ts bytes.Buffer
		var uris []string
		for _, ln := range strings.Split(pl, "\n") {
			if ln != "" && ln[0] != '#' {
				uris = append(uris, ln)
			}
		}
		if len(uris) != 3 || !strings.Contains(pl, "#EXTINF:4.000000,") {
			t.Errorf("%s: segments %v\n%s", name, uris, pl)
		}
		for _, u := range uris {
			w := serve(l, "/vod/"+name+"/"+u)
			if w.Code != 200 || w.Header().Get("Content-Type") != "video/mp2t" || w.Body.Len()%188 != 0 || w.Body.Bytes()[0] != 0x47 {
				t.Fatalf("%s segment %s: %d %v, %d bytes", name, u, w.Code, w.Header(), w.Body.Len())
			}
			ts.Write(w.Body.Bytes())
		}
		p := filepath.Join(t.TempDir(), name+".ts")
		os.WriteFile(p, ts.Bytes(), 0o644)
		if d := probeDuration(t, p); d < 8 || d > 10 {
			t.Errorf("%s: segments last %.2fs, want 9s", name, d)
		}
		// A segment of another version is gone.
		if w := serve(l, "/vod/"+name+"/zz-0.ts"); w.Code != 404 {
			t.Errorf("%s: stale segment: %d", name, w.Code)
		}
	}
	// The FLV recording as MP4: whole, and in ranges that add up to it.
	w := serve(l, "/vod/f.mp4")
	if w.Code != 200 || w.Header().Get("Content-Type") != "video/mp4" {
		t.Fatalf("remuxed: %d %v", w.Code, w.Header())
	}
	whole := w.Body.Bytes()
	p := filepath.Join(t.TempDir(), "f.mp4")
	os.WriteFile(p, whole, 0o644)
	if d := probeDuration(t, p); d < 8.5 || d > 9.5 {
		t.Errorf("remuxed MP4 lasts %.2fs, want 9s", d)
	}
	for _, rng := range [][2]int{{0, 99}, {1000, 70000}, {len(whole) - 5000, len(whole) - 1}} {
		w := serve(l, "/vod/f.mp4", "Range", "bytes="+strconv.Itoa(rng[0])+"-"+strconv.Itoa(rng[1]))
		if w.Code != 206 || !bytes.Equal(w.Body.Bytes(), whole[rng[0]:rng[1]+1]) {
			t.Errorf("range %v: %d, %d bytes", rng, w.Code, w.Body.Len())
		}
	}
	// The info endpoint describes both.
	var a Asset
	w = serve(l, "/api/v1/vod/f")
	if err := jsonDecode(w.Body.Bytes(), &a); err != nil || a.Kind != KindFLV || a.MP4Size != int64(len(whole)) || a.Duration < 8.5 || !a.Video || !a.Audio {
		t.Errorf("info: %d %s (%v)", w.Code, w.Body, err)
	}
	if _, _, err := l.open(context.Background(), "nope"); err == nil {
		t.Error("a missing asset opened")
	}
}

// TestHEVCMP4: an MP4 of HEVC (hvc1) and AAC is indexed and cut into
// MPEG-TS segments ffprobe reads as HEVC.
func TestHEVCMP4(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/hevc.mp4")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "h.mp4"), b, 0o644)
	x, err := BuildIndex(KindMP4, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if x.Video == nil || x.Video.Video.HEVC == nil || len(x.Video.Samples) != 20 || x.Audio == nil {
		t.Fatalf("index %+v", x)
	}
	l := openLibrary(t, dir)
	w := serve(l, "/vod/h/index.m3u8")
	if w.Code != 200 {
		t.Fatalf("playlist: %d %s", w.Code, w.Body)
	}
	var ts bytes.Buffer
	for _, ln := range strings.Split(w.Body.String(), "\n") {
		if ln != "" && ln[0] != '#' {
			ts.Write(serve(l, "/vod/h/"+ln).Body.Bytes())
		}
	}
	p := filepath.Join(t.TempDir(), "h.ts")
	os.WriteFile(p, ts.Bytes(), 0o644)
	testutil.Need(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width", "-of", "csv=p=0", p).CombinedOutput()
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "hevc,160") {
		t.Errorf("ffprobe of the segments: %s %v", out, err)
	}
}
