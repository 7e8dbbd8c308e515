package hls

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	hintURI = regexp.MustCompile(`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"?]+)`)
	partURI = regexp.MustCompile(`#EXT-X-PART:[^\n]*URI="([^"?]+)`)
)

// do sends a request and returns its status, headers and body.
func do(t *testing.T, c *http.Client, method, url string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, b
}

// direct asks the session's gohlslib muxer itself for a file, with the
// given query, and gives media playlists the public names: what a player
// would get from gohlslib rendering for it alone.
func direct(t *testing.T, f *fixture, file, rawQuery string) (int, []byte) {
	t.Helper()
	sess := f.muxer().current()
	rec := httptest.NewRecorder()
	sess.hm.Handle(rec, httptest.NewRequest(http.MethodGet, "/"+file+"?"+rawQuery, nil))
	body := rec.Body.Bytes()
	if rec.Code == http.StatusOK && strings.HasSuffix(file, "_stream.m3u8") {
		nm, _ := sess.seq.names(sess.tag)
		body = nm.playlist(body)
	}
	return rec.Code, body
}

// TestLowLatencyBlockingReload: a blocking playlist reload and a request
// for the preload hint's part wait for the next part and get it, and
// gohlslib's rules for the _HLS_ parameters hold.
func TestLowLatencyBlockingReload(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, media := benchServer(t, Config{LowLatency: true}, true)
	url := f.url(media)

	code, _, body := do(t, f.client, "GET", url)
	for _, tag := range []string{"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:TYPE=PART"} {
		if code != http.StatusOK || !bytes.Contains(body, []byte(tag)) {
			t.Fatalf("media playlist lacks %s: %d\n%s", tag, code, body)
		}
	}
	for range 3 {
		_, _, body := do(t, f.client, "GET", url)
		msn, part := llNextPart(string(body))
		hint := hintURI.FindSubmatch(body)
		if hint == nil {
			t.Fatalf("no preload hint:\n%s", body)
		}
		// Players ask for the next part's playlist and for the part
		// itself before either exists; both wait for it.
		const players = 20
		var wg sync.WaitGroup
		bodies := make([][]byte, players)
		codes := make([]int, players)
		for i := range players {
			wg.Go(func() {
				codes[i], _, bodies[i] = do(t, f.client, "GET", fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", url, msn, part))
			})
		}
		var partCode int
		var partHeader http.Header
		var partBody []byte
		wg.Go(func() { partCode, partHeader, partBody = do(t, f.client, "GET", f.url(string(hint[1]))) })
		wg.Wait()
		for i := range players {
			if gm, gp := llNextPart(string(bodies[i])); codes[i] != http.StatusOK || gm*1000+gp <= msn*1000+part {
				t.Fatalf("blocking reload for %d.%d: %d, playlist ends before it:\n%s", msn, part, codes[i], bodies[i])
			}
		}
		if partCode != http.StatusOK || len(partBody) == 0 || partHeader.Get("Content-Type") != "video/mp4" ||
			partHeader.Get("Cache-Control") != "max-age=3600" || partHeader.Get("Content-Length") != fmt.Sprint(len(partBody)) {
			t.Fatalf("preload hint %s: %d %v, %d bytes", hint[1], partCode, partHeader, len(partBody))
		}
		if !bytes.Contains(bodies[0], []byte(`URI="`+string(hint[1])+`"`)) {
			t.Errorf("the playlist answering the blocking reload does not list part %s:\n%s", hint[1], bodies[0])
		}
		if code, got := direct(t, f, string(hint[1]), ""); code != http.StatusOK || !bytes.Equal(got, partBody) {
			t.Errorf("part %s: %d bytes served, gohlslib has %d (%d)", hint[1], len(partBody), len(got), code)
		}
	}

	_, _, body = do(t, f.client, "GET", url)
	msn, _ := llNextPart(string(body))
	for _, tc := range []struct {
		query string
		code  int
		has   string
	}{
		{fmt.Sprintf("_HLS_msn=%d", msn+2), http.StatusBadRequest, ""}, // past the next segment
		{"_HLS_msn=x", http.StatusBadRequest, ""},
		{"_HLS_part=1", http.StatusBadRequest, ""},
		{fmt.Sprintf("_HLS_msn=%d&_HLS_part=y", msn), http.StatusBadRequest, ""},
		{fmt.Sprintf("_HLS_msn=%d&_HLS_part=%d&_HLS_skip=YES", msn-1, 0), http.StatusOK, "#EXT-X-SKIP:SKIPPED-SEGMENTS="},
	} {
		code, _, body := do(t, f.client, "GET", url+"?"+tc.query)
		if code != tc.code || !bytes.Contains(body, []byte(tc.has)) {
			t.Errorf("?%s: %d, want %d with %q:\n%s", tc.query, code, tc.code, tc.has, body)
		}
	}
	// The part after the preload hint's is waited for too: a player may
	// have seen a playlist rendered just before the view that lists it.
	hint := hintURI.FindSubmatch(body)
	n, _ := strconv.Atoi(string(regexp.MustCompile(`_part(\d+)\.mp4$`).FindSubmatch(hint[1])[1]))
	after := regexp.MustCompile(`_part\d+\.mp4$`).ReplaceAllString(string(hint[1]), fmt.Sprintf("_part%d.mp4", n+1))
	if code, h, b := do(t, f.client, "GET", f.url(after)); code != http.StatusOK || h.Get("Content-Length") != fmt.Sprint(len(b)) {
		t.Errorf("%s, the part after the hint: %d %v", after, code, h)
	}
	// A part well past the preload hint is not made yet, nor announced.
	name := regexp.MustCompile(`_part(\d+)\.mp4$`).ReplaceAllString(string(hintURI.FindSubmatch(body)[1]), "_part999999.mp4")
	if code, _, _ := do(t, f.client, "GET", f.url(name)); code != http.StatusNotFound {
		t.Errorf("%s: %d, want 404", name, code)
	}
}

// TestSignedQuery: a request's query (a signed URL's token) is on every
// URI of the playlists, exactly as gohlslib writes it.
func TestSignedQuery(t *testing.T) {
	for _, low := range []bool{false, true} {
		t.Run(fmt.Sprintf("lowlatency=%v", low), func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			f, media := benchServer(t, Config{LowLatency: low}, false)
			for _, tc := range []struct{ file, query string }{
				{"index.m3u8", "expires=17&sig=ab%2Fc"},
				{media, "sig=ab%2Fc&expires=17"},
				{media, "expires=17&_HLS_skip=YES&z="},
				{"audio2_stream.m3u8", "token=x"},
			} {
				var want []byte
				eventually(t, 5*time.Second, "a stable playlist", func() bool {
					code, got := direct(t, f, tc.file, tc.query)
					if code != http.StatusOK {
						t.Fatalf("gohlslib: %s?%s: %d", tc.file, tc.query, code)
					}
					if !bytes.Equal(got, want) {
						want = got
						return false
					}
					return true
				})
				code, h, body := do(t, f.client, "GET", f.url(tc.file)+"?"+tc.query)
				if code != http.StatusOK || !bytes.Equal(body, want) || h.Get("Cache-Control") != "no-cache" ||
					h.Get("Content-Type") != "application/vnd.apple.mpegurl" {
					t.Errorf("%s?%s: %d %v\n%s\nwant (gohlslib's, numbered):\n%s", tc.file, tc.query, code, h, body, want)
				}
			}
		})
	}
}

// TestFilesFromMemory: segments, parts and init files come with
// gohlslib's bytes and headers and a Content-Length; HEAD gets the
// headers only; concurrent first requests get the same bytes.
func TestFilesFromMemory(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, media := benchServer(t, Config{LowLatency: true}, false)
	_, _, pl := do(t, f.client, "GET", f.url(media))
	segs := segmentLine.FindAll(pl, -1)
	parts := partURI.FindAllSubmatch(pl, -1)
	initName := regexp.MustCompile(`video1_[0-9a-f]{8}_init\.mp4`).Find(pl)
	if len(segs) == 0 || len(parts) == 0 || initName == nil {
		t.Fatalf("playlist:\n%s", pl)
	}
	sess := f.muxer().current()
	nm, _ := sess.seq.names(sess.tag)
	for _, tc := range []struct {
		file, cacheControl string
	}{
		{string(segs[len(segs)-1]), "max-age=3600"},
		{string(parts[len(parts)-1][1]), "max-age=3600"},
		{string(initName), "max-age=30"},
	} {
		private, _ := nm.private(tc.file)
		_, want := direct(t, f, private, "")
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				code, h, body := do(t, f.client, "GET", f.url(tc.file))
				if code != http.StatusOK || !bytes.Equal(body, want) || h.Get("Content-Length") != fmt.Sprint(len(want)) ||
					h.Get("Content-Type") != "video/mp4" || h.Get("Cache-Control") != tc.cacheControl {
					t.Errorf("%s: %d %v, %d bytes, want %d", tc.file, code, h, len(body), len(want))
				}
			})
		}
		wg.Wait()
		code, h, body := do(t, f.client, "HEAD", f.url(tc.file))
		if code != http.StatusOK || len(body) != 0 || h.Get("Content-Length") != fmt.Sprint(len(want)) {
			t.Errorf("HEAD %s: %d %v, %d bytes", tc.file, code, h, len(body))
		}
	}
	for _, file := range []string{"video1_" + nm.tag + "_s1.mp4", sess.current().prefix + "_video1_seg999.mp4", "ffffffffffff_video1_part3.mp4"} {
		if code, _, _ := do(t, f.client, "GET", f.url(file)); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", file, code)
		}
	}
}

// TestCacheFollowsWindow: as the stream goes on, the cache keeps only
// the segments and parts the playlists still list.
func TestCacheFollowsWindow(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, media := benchServer(t, Config{LowLatency: true, SegmentDuration: 500 * time.Millisecond, PartDuration: 100 * time.Millisecond}, true)
	seen := map[string]bool{}
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		_, _, pl := do(t, f.client, "GET", f.url(media))
		for _, s := range segmentLine.FindAll(pl, -1) {
			if !seen[string(s)] {
				seen[string(s)] = true
				do(t, f.client, "GET", f.url(string(s)))
			}
		}
		for _, p := range partURI.FindAllSubmatch(pl, -1) {
			do(t, f.client, "GET", f.url(string(p[1])))
		}
		time.Sleep(100 * time.Millisecond)
	}
	sess := f.muxer().current()
	v := sess.current()
	c := &sess.files
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(seen) < 10 {
		t.Fatalf("only %d segments in 12 s", len(seen))
	}
	segments := 0
	for name, file := range c.files {
		switch {
		case file.kind == cachedSegment && file.num < v.seq:
			t.Errorf("%s cached, the playlist starts at segment %d", name, v.seq)
		case file.kind == cachedPart && file.num < v.firstPart:
			t.Errorf("%s cached, the playlist's first part is %d", name, v.firstPart)
		case file.kind == cachedSegment:
			segments++
		}
	}
	if segments > f.srv.cfg.SegmentCount {
		t.Errorf("%d segments cached, the playlist lists %d", segments, f.srv.cfg.SegmentCount)
	}
	if c.order.Len() != len(c.files) {
		t.Errorf("%d files in the eviction order, %d cached", c.order.Len(), len(c.files))
	}
}

// TestWithQuery: the query goes on URI lines and URI attributes, not on
// gap segments or other attributes.
func TestWithQuery(t *testing.T) {
	in := "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio2\",URI=\"audio2_stream.m3u8\"\n" +
		"#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-GAP\n#EXTINF:1.00000,\ngap.mp4\n#EXTINF:1.00000,\ns1.mp4\n" +
		"#EXT-X-PART:DURATION=0.20000,URI=\"p1.mp4\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.mp4\"\n"
	want := "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio2\",URI=\"audio2_stream.m3u8?t=1\"\n" +
		"#EXT-X-MAP:URI=\"init.mp4?t=1\"\n#EXT-X-GAP\n#EXTINF:1.00000,\ngap.mp4\n#EXTINF:1.00000,\ns1.mp4?t=1\n" +
		"#EXT-X-PART:DURATION=0.20000,URI=\"p1.mp4?t=1\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.mp4?t=1\"\n"
	if got := string(withQuery([]byte(in), "t=1")); got != want {
		t.Errorf("withQuery:\n%s\nwant:\n%s", got, want)
	}
}

// TestBlockingReloadAcrossRestart: players in blocking reloads while the
// publisher changes its configuration, which replaces the muxer's
// session, get playlists, never a server error.
func TestBlockingReloadAcrossRestart(t *testing.T) {
	needTools(t)
	t.Cleanup(func() { goleak.VerifyNone(t) })
	small, large := encodeFLV(t, "320x240", true, true), encodeFLV(t, "640x360", true, true)
	f := newFixture(t, Config{LowLatency: true}, small, large)
	defer f.close()
	code, _, index := f.get("index.m3u8")
	if code != http.StatusOK {
		t.Fatalf("index.m3u8: %d", code)
	}
	media := regexp.MustCompile(`(?m)^\S+_stream\.m3u8$`).FindString(index)
	first := f.muxer().current()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	codes := map[int]int{}
	for range 10 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, body, _ := benchTry(f.client, f.url(media))
				msn, part := llNextPart(body)
				code, _, err := benchTry(f.client, f.url(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", media, msn, part)))
				if err != nil {
					code = -1
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	// The publisher reconnects with a larger picture after 6s.
	eventually(t, 20*time.Second, "a new session", func() bool {
		s := f.muxer().current()
		return s != nil && s != first
	})
	mu.Lock()
	before := codes[http.StatusOK]
	mu.Unlock()
	eventually(t, 10*time.Second, "blocking reloads answered by the new session", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return codes[http.StatusOK] >= before+10
	})
	close(stop)
	wg.Wait()
	t.Logf("answers: %v", codes)
	for code, n := range codes {
		if code >= 500 || code < 0 {
			t.Errorf("%d answers %d", n, code)
		}
	}
	if codes[http.StatusOK] == 0 {
		t.Error("no blocking reload answered")
	}
}

// TestLowLatencyPlayers: players that follow a low-latency stream the way
// hls.js does, a blocking delta reload for the next part while they fetch
// the part the preload hint names, get every answer they ask for.
func TestLowLatencyPlayers(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, media := benchServer(t, Config{LowLatency: true}, true)
	var mu sync.Mutex
	answers := map[string]int{}
	note := func(what string, code int) {
		mu.Lock()
		answers[fmt.Sprintf("%s %d", what, code)]++
		mu.Unlock()
	}
	stop := time.Now().Add(6 * time.Second)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			// Players follow the video and audio playlists.
			file := media
			if i%2 == 1 {
				file = "audio2_stream.m3u8"
			}
			code, pl, err := benchTry(f.client, f.url(file))
			if err != nil || code != http.StatusOK {
				note("first playlist", code)
				return
			}
			for time.Now().Before(stop) {
				msn, part := llNextPart(pl)
				hint := hintURI.FindStringSubmatch(pl)
				if hint == nil {
					note("no hint", 0)
					return
				}
				var inner sync.WaitGroup
				inner.Go(func() {
					code, _, _ := benchTry(f.client, f.url(hint[1]))
					note("part", code)
				})
				code, pl, err = benchTry(f.client, f.url(fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d&_HLS_skip=YES", file, msn, part)))
				inner.Wait()
				note("blocking reload", code)
				if err != nil || code != http.StatusOK {
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("answers: %v", answers)
	for k := range answers {
		if !strings.HasSuffix(k, " 200") {
			t.Errorf("answers: %v", answers)
			break
		}
	}
}

// TestScanDeltaUpdate: a delta update lists the same segment in progress
// and preload hint as the whole playlist it abbreviates.
func TestScanDeltaUpdate(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f, media := benchServer(t, Config{LowLatency: true}, true)
	for range 50 {
		_, whole := direct(t, f, media, "")
		_, delta := direct(t, f, media, "_HLS_skip=YES")
		w, d := scan(whole), scan(delta)
		if w.hint != d.hint {
			continue // a part was made between the two
		}
		if !bytes.Contains(delta, []byte("#EXT-X-SKIP:SKIPPED-SEGMENTS=")) {
			t.Fatalf("the delta update skips nothing:\n%s", delta)
		}
		if w.nextSegment() != d.nextSegment() || w.nextParts != d.nextParts || w.hint == 0 {
			t.Fatalf("whole %+v, delta %+v", w, d)
		}
		return
	}
	t.Fatal("no two renderings of the same part")
}

// TestSegmentNumber: only a segment of the session's own prefix has a
// number; parts, init files and other sessions' names do not.
func TestSegmentNumber(t *testing.T) {
	const prefix = "0123456789ab"
	for _, tc := range []struct {
		name, prefix string
		n            uint64
		ok           bool
	}{
		{"0123456789ab_video1_seg12.mp4", prefix, 12, true},
		{"0123456789ab_audio2_seg0.mp4", prefix, 0, true},
		{"0123456789ab_video1_part40.mp4", prefix, 0, false},
		{"0123456789ab_video1_init.mp4", prefix, 0, false},
		{"ba9876543210_video1_seg12.mp4", prefix, 0, false},
		{"0123456789ab_video1_seg12.m4s", prefix, 0, false},
		{"0123456789ab_video1_seg.mp4", prefix, 0, false},
		{"0123456789ab_video1_seg12.mp4", "", 0, false},
	} {
		n, ok := segmentNumber(tc.name, tc.prefix)
		if ok != tc.ok || (ok && n != tc.n) {
			t.Errorf("segmentNumber(%q, %q) = %d, %v; want %d, %v", tc.name, tc.prefix, n, ok, tc.n, tc.ok)
		}
	}
}
