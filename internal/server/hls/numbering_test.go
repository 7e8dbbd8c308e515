package hls

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/testutil"
)

func TestFirstNumber(t *testing.T) {
	for _, tc := range []struct{ ms, length, want int64 }{
		{0, 2000, 0},
		{33, 2000, 0},
		{2000, 2000, 1},
		{1999, 2000, 1},   // a keyframe a millisecond early is the same segment
		{60033, 2000, 30}, // a minute into the stream
		{3_600_000 + 12, 1001, 3596},
		{-500, 1000, 0},
		{5000, 0, 0},
	} {
		if got := firstNumber(tc.ms, tc.length); got != tc.want {
			t.Errorf("firstNumber(%d, %d) = %d, want %d", tc.ms, tc.length, got, tc.want)
		}
	}
}

// TestNumberingFollowsTimestamps: sessions that start at different
// keyframes of one stream number its segments alike.
func TestNumberingFollowsTimestamps(t *testing.T) {
	keyframes := func(from int64) *numbering {
		n := &numbering{minDur: 1000}
		for ms := from; ms < from+10_000; ms += 2000 { // a keyframe every 2 s
			n.start(ms)
		}
		return n
	}
	a, b := keyframes(40), keyframes(40+7*2000)
	na, oka := a.names("t")
	nb, okb := b.names("t")
	if !oka || !okb {
		t.Fatal("numbers unknown after five keyframes")
	}
	// gohlslib numbers each session's segments from 0: segment 7 of a is
	// segment 0 of b.
	if na.offset+7 != nb.offset {
		t.Errorf("offsets %d and %d: the segment a numbers %d, b numbers %d", na.offset, nb.offset, na.offset+7, nb.offset)
	}
	// Keyframes closer than the segment duration: a segment starts at
	// the first keyframe a second or more into the running one.
	n := &numbering{minDur: 1000}
	for _, ms := range []int64{4000, 4500, 5000, 5500} {
		n.start(ms)
	}
	if nm, _ := n.names("t"); nm.offset != 4 {
		t.Errorf("offset %d for segments of 1 s from 4 s, want 4", nm.offset)
	}
}

func TestNamesRewrite(t *testing.T) {
	nm := names{tag: "0a1b2c3d", offset: 1000, prefix: "5e6f7a8b9c0d"}
	in := "#EXTM3U\n#EXT-X-VERSION:10\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n" +
		"#EXT-X-MAP:URI=\"5e6f7a8b9c0d_video1_init.mp4?token=x\"\n" +
		"#EXTINF:2.00000,\n5e6f7a8b9c0d_video1_seg3.mp4?token=x\n" +
		"#EXTINF:2.00000,\n5e6f7a8b9c0d_video1_seg4.mp4?token=x\n" +
		"#EXT-X-PART:DURATION=0.20000,URI=\"5e6f7a8b9c0d_video1_part40.mp4\"\n" +
		"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5e6f7a8b9c0d_video1_part41.mp4\"\n"
	want := "#EXTM3U\n#EXT-X-VERSION:10\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1003\n" +
		"#EXT-X-MAP:URI=\"video1_0a1b2c3d_init.mp4?token=x\"\n" +
		"#EXTINF:2.00000,\nvideo1_0a1b2c3d_s1003.mp4?token=x\n" +
		"#EXTINF:2.00000,\nvideo1_0a1b2c3d_s1004.mp4?token=x\n" +
		"#EXT-X-PART:DURATION=0.20000,URI=\"5e6f7a8b9c0d_video1_part40.mp4\"\n" +
		"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5e6f7a8b9c0d_video1_part41.mp4\"\n"
	if got := string(nm.playlist([]byte(in))); got != want {
		t.Errorf("rewritten playlist:\n%s\nwant:\n%s", got, want)
	}
	if p := prefixIn([]byte(in)); p != nm.prefix {
		t.Errorf("prefixIn = %q, want %q", p, nm.prefix)
	}
	for _, tc := range []struct {
		public, private string
		ok              bool
	}{
		{"video1_0a1b2c3d_s1004.mp4", "5e6f7a8b9c0d_video1_seg4.mp4", true},
		{"audio2_0a1b2c3d_init.mp4", "5e6f7a8b9c0d_audio2_init.mp4", true},
		{"video1_0a1b2c3d_s999.mp4", "", false},  // before the session
		{"video1_ffffffff_s1004.mp4", "", false}, // another configuration
		{"5e6f7a8b9c0d_video1_part40.mp4", "5e6f7a8b9c0d_video1_part40.mp4", true},
	} {
		got, ok := nm.private(tc.public)
		if got != tc.private || ok != tc.ok {
			t.Errorf("private(%q) = %q, %v; want %q, %v", tc.public, got, ok, tc.private, tc.ok)
		}
	}
	for raw, want := range map[string]string{
		"_HLS_msn=1005&_HLS_part=2": "_HLS_msn=5&_HLS_part=2",
		"_HLS_msn=12&_HLS_part=2":   "",
		"token=x":                   "token=x",
	} {
		if got := nm.query(raw); got != want {
			t.Errorf("query(%q) = %q, want %q", raw, got, want)
		}
	}
	if a, b := configTag([]byte{1, 2}, []byte{3}), configTag([]byte{1}, []byte{2, 3}); a == b || len(a) != 8 {
		t.Errorf("configTag: %q and %q", a, b)
	}
}

// TestTwoMuxersNumberAlike runs two HLS servers, as two nodes would, on one
// stream, the second started seconds after the first: a segment has the
// same number and name in both playlists and the same media (decode
// times and samples) in both files.
func TestTwoMuxersNumberAlike(t *testing.T) {
	needTools(t)
	defer goleak.VerifyNone(t)
	f := newFixture(t, Config{}, encodeFLV(t, "320x240", true, true))
	defer f.close()
	hub := &testutil.Streams{}
	hub.Put(f.st)
	late := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, hub)
	defer late.Close()
	getLate := func(file string) (int, string) {
		rec := httptest.NewRecorder()
		late.ServeStream(rec, httptest.NewRequest(http.MethodGet, "/live/test/"+file, nil), f.st.Name(), file)
		return rec.Code, rec.Body.String()
	}

	if code, _, body := f.get("video1_stream.m3u8"); code != http.StatusOK {
		t.Fatalf("first server: %d %s", code, body)
	}
	time.Sleep(2500 * time.Millisecond) // the second starts keyframes later
	if code, body := getLate("video1_stream.m3u8"); code != http.StatusOK {
		t.Fatalf("second server: %d %s", code, body)
	}

	var common string
	var seqA, seqB int64
	eventually(t, 10*time.Second, "a segment in both playlists", func() bool {
		_, _, a := f.get("video1_stream.m3u8")
		_, b := getLate("video1_stream.m3u8")
		na, nb := segmentNumbers(a), segmentNumbers(b)
		for name, s := range nb {
			if sa, ok := na[name]; ok {
				common, seqA, seqB = name, sa, s
				return true
			}
		}
		return false
	})
	if seqA != seqB {
		t.Fatalf("%s: number %d in the first playlist, %d in the second", common, seqA, seqB)
	}
	if want := regexp.MustCompile(`_s` + strconv.FormatInt(seqA, 10) + `\.mp4$`); !want.MatchString(common) {
		t.Errorf("segment %s listed as number %d", common, seqA)
	}
	_, _, a := f.get(common)
	_, b := getLate(common)
	if err := sameMedia([]byte(a), []byte(b)); err != "" {
		t.Errorf("%s from the two servers: %s", common, err)
	}
	_, _, pa := f.get("video1_stream.m3u8")
	initName := regexp.MustCompile(`video1_[0-9a-f]{8}_init\.mp4`).FindString(pa)
	_, _, ia := f.get(initName)
	code, ib := getLate(initName)
	if initName == "" || code != http.StatusOK || ia != ib {
		t.Errorf("init file %q: %d, same bytes %v", initName, code, ia == ib)
	}
}

// segmentNumbers maps a media playlist's segment URIs to their media
// sequence numbers.
func segmentNumbers(playlist string) map[string]int64 {
	out := map[string]int64{}
	seq := int64(-1)
	for line := range strings.SplitSeq(playlist, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"); ok {
			seq, _ = strconv.ParseInt(v, 10, 64)
		} else if line != "" && !strings.HasPrefix(line, "#") && seq >= 0 {
			out[line] = seq
			seq++
		}
	}
	return out
}

// sameMedia compares two fMP4 segments: the same samples, presented at
// the same times. Fragment sequence numbers count a muxer's own fragments,
// and decode times are gohlslib's guess from the picture order, which
// settles differently where a muxer starts; neither changes what is shown
// when.
func sameMedia(a, b []byte) string {
	var pa, pb fmp4.Parts
	if err := pa.Unmarshal(a); err != nil {
		return "first: " + err.Error()
	}
	if err := pb.Unmarshal(b); err != nil {
		return "second: " + err.Error()
	}
	ta, tb := presented(pa), presented(pb)
	if len(ta) != len(tb) {
		return strconv.Itoa(len(ta)) + " and " + strconv.Itoa(len(tb)) + " samples"
	}
	for i := range ta {
		if ta[i].track != tb[i].track || ta[i].pts != tb[i].pts || !bytes.Equal(ta[i].payload, tb[i].payload) {
			return "sample " + strconv.Itoa(i) + ": track " + strconv.Itoa(ta[i].track) + " at " + strconv.FormatInt(ta[i].pts, 10) +
				", and track " + strconv.Itoa(tb[i].track) + " at " + strconv.FormatInt(tb[i].pts, 10)
		}
	}
	return ""
}

type presentedSample struct {
	track   int
	pts     int64
	payload []byte
}

// presented lists a segment's samples with their presentation times.
func presented(parts fmp4.Parts) []presentedSample {
	var out []presentedSample
	for _, p := range parts {
		for _, tr := range p.Tracks {
			dts := int64(tr.BaseTime)
			for _, s := range tr.Samples {
				out = append(out, presentedSample{tr.ID, dts + int64(s.PTSOffset), s.Payload})
				dts += int64(s.Duration)
			}
		}
	}
	return out
}

// FuzzNames: whatever a player asks for, the name and query translations
// never panic; a public segment name taken back to gohlslib's and out
// again names the same file; a translated _HLS_msn is never negative.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"video1_0a1b2c3d_s1234.mp4", "audio2_0a1b2c3d_init.mp4", "video1_0a1b2c3d_s999.mp4",
		"video1_ffffffff_s1.mp4", "video1_0a1b2c3d_s99999999999999999999.mp4", "index.m3u8",
		"_HLS_msn=1500&_HLS_part=2", "_HLS_msn=-5", "_HLS_msn=%zz", "_HLS_msn=999999999999999999999",
	} {
		f.Add(s)
	}
	nm := names{tag: "0a1b2c3d", offset: 1000, prefix: "5e6f7a8b9c0d"}
	f.Fuzz(func(t *testing.T, in string) {
		// (A number with leading zeros names the same segment: the way
		// back gives its plain name, which names the same file.)
		if priv, ok := nm.private(in); ok && priv != in {
			back := nm.public(priv)
			if again, ok := nm.private(back); !ok || again != priv {
				t.Errorf("private(%q) = %q, public of it %q, private of that %q", in, priv, back, again)
			}
		}
		q := nm.query(in)
		if v, err := url.ParseQuery(q); err == nil && q != in {
			if msn, err := strconv.ParseInt(v.Get("_HLS_msn"), 10, 64); err == nil && msn < 0 {
				t.Errorf("query(%q) = %q: a negative _HLS_msn", in, q)
			}
		}
	})
}
