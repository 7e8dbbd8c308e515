package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// playHLS polls the media playlist and downloads each new segment, the way
// a player does. A segment counts as its first frame for TTFF; HLS has no
// per-frame latency here.
func (p *player) playHLS(ctx context.Context, u *url.URL, lowLatency bool) error {
	client := p.r.httpClient
	get := func(ref string) ([]byte, error) {
		target, err := u.Parse(ref)
		if err != nil {
			return nil, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s: %s", target, resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	}
	p.playStart = time.Now()
	index, err := get(u.String())
	if err != nil {
		return err
	}
	media := ""
	for _, line := range strings.Split(string(index), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			media = line
			break
		}
	}
	if media == "" {
		media = u.String() // a media playlist already
	}
	mediaURL, err := u.Parse(media)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	p.joined()
	for ctx.Err() == nil {
		pl, err := get(mediaURL.String())
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(pl), "\n") {
			if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") || seen[line] {
				continue
			}
			seg, err := mediaURL.Parse(line)
			if err != nil {
				return err
			}
			b, err := get(seg.String())
			if err != nil {
				return err
			}
			seen[line] = true
			p.bytes.Add(int64(len(b)))
			now := time.Now()
			if p.first.IsZero() {
				p.first = now
				p.t.ttff.add(now.Sub(p.playStart))
			}
			if !p.last.IsZero() && now.Sub(p.last) > 3*time.Second && p.r.inWindow(now) {
				p.t.stalls.Add(1)
			}
			p.last = now
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return nil
}
