//go:build unix

package e2eutil

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HLSWatcher polls an HLS stream's media playlist as a player does, every
// half second, and records what a player would notice: answers other than
// 200, and the playlist's media sequence moving on.
type HLSWatcher struct {
	mu       sync.Mutex
	bad      []string // "STATUS URL" of every answer but 200, or the error
	sequence int64    // the highest last segment seen (media sequence + segments)
	polls    int
	cancel   context.CancelFunc
	done     chan struct{}
}

// WatchHLS starts polling the playlist at playlistURL (a multivariant
// playlist is followed to its first media playlist). Close stops it.
func WatchHLS(playlistURL string) *HLSWatcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &HLSWatcher{cancel: cancel, done: make(chan struct{}), sequence: -1}
	go func() {
		defer close(w.done)
		client := &http.Client{Timeout: 5 * time.Second}
		media := playlistURL
		for {
			body, status, err := get(ctx, client, media)
			w.mu.Lock()
			w.polls++
			switch {
			case ctx.Err() != nil:
			case err != nil:
				w.bad = append(w.bad, err.Error())
			case status != http.StatusOK:
				w.bad = append(w.bad, fmt.Sprintf("%d %s", status, media))
			case strings.Contains(body, "#EXT-X-STREAM-INF"):
				if u := firstURI(body); u != "" {
					if next, err := url.Parse(media); err == nil {
						if ref, err := next.Parse(u); err == nil {
							media = ref.String()
						}
					}
				}
			default:
				if last := lastSegment(body); last > w.sequence {
					w.sequence = last
				}
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w
}

func get(ctx context.Context, c *http.Client, u string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), resp.StatusCode, err
}

// firstURI returns a playlist's first line that is not a tag.
func firstURI(body string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line
		}
	}
	return ""
}

// lastSegment returns the media sequence number of a media playlist's last
// segment, or -1.
func lastSegment(body string) int64 {
	seq, n := int64(-1), int64(0)
	for line := range strings.SplitSeq(body, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.ParseInt(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXTINF:"):
			n++
		}
	}
	if seq < 0 || n == 0 {
		return -1
	}
	return seq + n - 1
}

// Sequence returns the media sequence number of the newest segment seen,
// -1 before any.
func (w *HLSWatcher) Sequence() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sequence
}

// Bad returns every answer but 200 so far, and the errors.
func (w *HLSWatcher) Bad() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bad...)
}

// Close stops polling.
func (w *HLSWatcher) Close() { w.cancel(); <-w.done }
