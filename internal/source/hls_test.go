package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
)

// collect keeps the packets a source writes.
type collect struct {
	mu  sync.Mutex
	got []media.Packet
}

func (c *collect) WritePacket(p *media.Packet) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, *p)
	return nil
}

// vodPlaylist is an ended playlist of one segment.
func vodPlaylist(segment string) string {
	return "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:0.8,\n" + segment + "\n#EXT-X-ENDLIST\n"
}

// TestHLSPull: a playlist of an MPEG-TS segment made by ffmpeg comes out
// as the decoder configurations, then frames from a keyframe on.
func TestHLSPull(t *testing.T) {
	ts, err := os.ReadFile("../protocol/mpegts/testdata/tiny.ts")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live/cam/index.m3u8", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, vodPlaylist("seg0.ts"))
	})
	mux.HandleFunc("GET /live/cam/seg0.ts", func(w http.ResponseWriter, r *http.Request) { w.Write(ts) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	m := New(Config{Timeout: 5 * time.Second}, nil)
	defer m.Close()
	u, _ := url.Parse(srv.URL + "/live/cam/index.m3u8?token=T")
	var c collect
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.pullHLS(ctx, u, &c); err == nil || !strings.Contains(err.Error(), "end of stream") {
		t.Errorf("pullHLS of an ended playlist: %v, want the end of the stream", err)
	}
	var avc, aac bool
	video, audio := 0, 0
	for _, p := range c.got {
		switch {
		case p.SeqHeader && p.Codec == media.CodecH264:
			if _, err := media.ParseAVCConfig(p.Payload); err != nil {
				t.Errorf("avcC: %v", err)
			}
			avc = true
		case p.SeqHeader && p.Codec == media.CodecAAC:
			aac = true
		case p.Kind == media.KindVideo:
			if !avc || !aac {
				t.Fatal("a frame before the configurations")
			}
			if video == 0 && !p.Keyframe {
				t.Error("the first video frame is no keyframe")
			}
			video++
		case p.Kind == media.KindAudio:
			audio++
		}
	}
	if video == 0 || audio == 0 {
		t.Errorf("%d video frames, %d audio frames; want both", video, audio)
	}
}

// TestHLSSameOrigin: a playlist that names segments or sub-playlists on
// another origin, or redirects there, gets nothing from it.
func TestHLSSameOrigin(t *testing.T) {
	var foreign atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreign.Add(1)
		fmt.Fprint(w, vodPlaylist("seg0.ts"))
	}))
	defer other.Close()
	otherPort := other.URL[strings.LastIndex(other.URL, ":"):]
	mux := http.NewServeMux()
	mux.HandleFunc("GET /segments.m3u8", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, vodPlaylist(other.URL+"/seg0.ts"))
	})
	mux.HandleFunc("GET /variants.m3u8", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000,CODECS=\"avc1.42c00a,mp4a.40.2\"\n%s/index.m3u8\n", other.URL)
	})
	mux.HandleFunc("GET /redirect.m3u8", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/index.m3u8", http.StatusFound)
	})
	mux.HandleFunc("GET /localhost.m3u8", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, vodPlaylist("http://localhost"+otherPort+"/seg0.ts")) // the same address, by another name
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	m := New(Config{Timeout: 5 * time.Second}, nil)
	defer m.Close()
	for _, path := range []string{"/segments.m3u8", "/variants.m3u8", "/redirect.m3u8", "/localhost.m3u8"} {
		t.Run(path, func(t *testing.T) {
			u, _ := url.Parse(srv.URL + path)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := m.pullHLS(ctx, u, &collect{})
			if !errors.Is(err, errOtherOrigin) && (err == nil || !strings.Contains(err.Error(), errOtherOrigin.Error())) {
				t.Errorf("pullHLS: %v, want a refusal of the other origin", err)
			}
		})
	}
	if n := foreign.Load(); n != 0 {
		t.Errorf("the other origin got %d requests, want none", n)
	}
}

func TestOrigin(t *testing.T) {
	for raw, want := range map[string]string{
		"http://h/a.m3u8":               "http://h:80",
		"HTTP://H:80/a.m3u8":            "http://h:80",
		"https://u:p@h/a.m3u8?token=T":  "https://h:443",
		"https://h:8443/a/b.ts":         "https://h:8443",
		"http://[::1]:8080/live/x.m3u8": "http://[::1]:8080",
	} {
		u, _ := url.Parse(raw)
		if got := origin(u); got != want {
			t.Errorf("origin(%s) = %s, want %s", raw, got, want)
		}
	}
}
