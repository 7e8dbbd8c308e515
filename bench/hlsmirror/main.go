// Command hlsmirror copies a live HLS stream from a server into a
// directory as the server makes it: the multivariant and media playlists,
// init files and segments, the same bytes under the same names. A static
// file server (nginx, in bench/compare-hls.sh) then serves the copy to the
// same players as the server itself, with the same live timing give or
// take one poll.
//
// Each poll (every -interval) fetches the playlists, then every segment
// and init file they list that is not copied yet, and only then replaces
// each playlist (written aside and renamed), so a player never finds a
// name that is not there yet. Files that left every playlist are removed a
// while later (-keep), as a live origin does.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	src := flag.String("src", "", "the stream's multivariant playlist, e.g. http://127.0.0.1:8080/live/bench/index.m3u8")
	dir := flag.String("dir", "", "directory to copy the stream into (created)")
	interval := flag.Duration("interval", 100*time.Millisecond, "time between two polls")
	keep := flag.Duration("keep", 30*time.Second, "how long a file stays after it left every playlist")
	flag.Parse()
	if *src == "" || *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: hlsmirror -src URL/index.m3u8 -dir DIR")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, err := newMirror(*src, *dir, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hlsmirror:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		if err := m.poll(ctx); err != nil && ctx.Err() == nil {
			m.logs(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// mirror is one stream's copy.
type mirror struct {
	index  *url.URL
	dir    string
	keep   time.Duration
	client *http.Client
	copied map[string]time.Time // file name → last time a playlist listed it
	last   string               // the last error logged
}

func newMirror(src, dir string, keep time.Duration) (*mirror, error) {
	u, err := url.Parse(src)
	if err != nil || path.Base(u.Path) == "" {
		return nil, fmt.Errorf("-src %q: want the URL of a playlist", src)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &mirror{index: u, dir: dir, keep: keep, copied: map[string]time.Time{},
		client: &http.Client{Timeout: 5 * time.Second}}, nil
}

// logs logs an error once until another comes.
func (m *mirror) logs(err error) {
	if err.Error() != m.last {
		m.last = err.Error()
		slog.Warn("hlsmirror", "err", err)
	}
}

// poll copies what is new.
func (m *mirror) poll(ctx context.Context) error {
	index, err := m.get(ctx, m.index)
	if err != nil {
		return err
	}
	now := time.Now()
	playlists := map[string][]byte{path.Base(m.index.Path): index}
	for _, ref := range uris(index) {
		if !strings.HasSuffix(ref, ".m3u8") {
			continue
		}
		u, err := m.index.Parse(ref)
		if err != nil {
			return err
		}
		b, err := m.get(ctx, u)
		if err != nil {
			return err
		}
		for _, f := range uris(b) {
			if err := m.copy(ctx, u, f, now); err != nil {
				return err
			}
		}
		playlists[path.Base(u.Path)] = b
	}
	// The media playlists first: the multivariant one names them.
	for name, b := range playlists {
		if name != path.Base(m.index.Path) {
			if err := m.write(name, b); err != nil {
				return err
			}
		}
	}
	if err := m.write(path.Base(m.index.Path), index); err != nil {
		return err
	}
	for name, seen := range m.copied {
		if now.Sub(seen) > m.keep {
			os.Remove(filepath.Join(m.dir, name))
			delete(m.copied, name)
		}
	}
	return nil
}

// copy copies the file ref of playlist base unless it was, and notes that
// a playlist lists it.
func (m *mirror) copy(ctx context.Context, base *url.URL, ref string, now time.Time) error {
	u, err := base.Parse(ref)
	if err != nil {
		return err
	}
	name := path.Base(u.Path)
	if _, ok := m.copied[name]; !ok {
		b, err := m.get(ctx, u)
		if err != nil {
			return err
		}
		if err := m.write(name, b); err != nil {
			return err
		}
	}
	m.copied[name] = now
	return nil
}

// write writes a file aside and renames it into place.
func (m *mirror) write(name string, b []byte) error {
	if name == "" || name == "." || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("refusing file name %q", name)
	}
	tmp := filepath.Join(m.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(m.dir, name))
}

func (m *mirror) get(ctx context.Context, u *url.URL) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if len(b) == 0 {
		return nil, errors.New("GET " + u.String() + ": empty")
	}
	return b, nil
}

// uris returns the URIs a playlist names: its URI lines and the URI
// attributes of EXT-X-MAP and EXT-X-MEDIA (parts and preload hints are
// left out: a static copy serves standard HLS).
func uris(playlist []byte) []string {
	var out []string
	for line := range bytes.Lines(playlist) {
		line = bytes.TrimSpace(line)
		switch {
		case len(line) == 0:
		case line[0] != '#':
			out = append(out, string(line))
		case bytes.HasPrefix(line, []byte("#EXT-X-MAP:")), bytes.HasPrefix(line, []byte("#EXT-X-MEDIA:")):
			if _, rest, ok := bytes.Cut(line, []byte(`URI="`)); ok {
				if v, _, ok := bytes.Cut(rest, []byte(`"`)); ok {
					out = append(out, string(v))
				}
			}
		}
	}
	return out
}
