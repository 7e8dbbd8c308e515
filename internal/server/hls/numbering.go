package hls

import (
	"hash/fnv"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Segment numbers and names the same on every node.
//
// gohlslib numbers a muxer's segments from 0 (7 for low-latency HLS, after
// its gap segments) and names its files after a random prefix, so two
// nodes muxing the same stream would list the same media under different
// numbers and names, and a player that the balancer moves from one to the
// other would jump back in the playlist or ask for files the new node does
// not have. The relayed stream's timestamps are the same on every node
// (the relay keeps them), and so are the muxer's fMP4 decode times, which
// follow them. From them a session derives:
//
//   - its first segment's number: the segment's start time divided by the
//     segment length (the time between its first two segment starts),
//     rounded. gohlslib counts on by one per segment, so where the
//     keyframe interval is constant and at least the segment duration
//     (every keyframe starts a segment) every node numbers every segment
//     alike;
//   - its files' public names: the track, a digest of the decoder
//     configuration and, for a segment, its number:
//     video1_1a2b3c4d_s1234.mp4, video1_1a2b3c4d_init.mp4.
//
// Playlists are rewritten on the way out and requests on the way in; a
// low-latency playlist's _HLS_msn is taken back to gohlslib's numbers.
// Partial segments keep gohlslib's names.

// segmentMin is the SegmentMinDuration given to gohlslib for a segment
// duration d: nine tenths of it. gohlslib starts a segment at the first
// keyframe that long into the running one, by the decode times it derives
// itself, which may come a millisecond short of the stream's: with d
// itself, keyframes d apart would start segments at one keyframe or the
// next depending on how their timestamps round, and numbering would
// depend on where a muxer started.
func segmentMin(d time.Duration) time.Duration { return d * 9 / 10 }

// numbering follows the leading track's segment starts, as gohlslib cuts
// them, until it knows the offset from gohlslib's segment numbers to the
// timestamp-derived ones. It is written by the session's feeder and read by
// requests.
type numbering struct {
	minDur int64 // ms: gohlslib's SegmentMinDuration
	first  int64 // ms: start of the first segment
	n      int   // segment starts seen, up to 2

	mu     sync.Mutex
	offset int64 // added to gohlslib's media sequence numbers
	known  bool
	prefix string // gohlslib's file name prefix, once a playlist showed it
}

// start notes a sample of the leading track at ms that may start a segment
// (a video keyframe; any audio frame of an audio-only stream): gohlslib
// starts one there when the running segment has lasted minDur.
func (n *numbering) start(ms int64) {
	switch {
	case n.n == 0:
		n.first, n.n = ms, 1
	case n.n == 1 && ms-n.first >= n.minDur:
		n.n = 2
		n.mu.Lock()
		n.offset, n.known = firstNumber(n.first, ms-n.first), true
		n.mu.Unlock()
	}
}

// firstNumber is the number of a session's first segment, which starts at
// ms and lasts length ms: its start in segment lengths, rounded.
func firstNumber(ms, length int64) int64 {
	if length <= 0 || ms < 0 {
		return 0
	}
	return (ms + length/2) / length
}

// names is what turns gohlslib's file names into public ones and back, for
// one session.
type names struct {
	tag    string // digest of the decoder configuration
	offset int64
	prefix string // gohlslib's; "" until known
}

// configTag digests a session's decoder configurations: its files' names
// change when they do, and are the same on every node for the same ones.
func configTag(configs ...[]byte) string {
	h := fnv.New32a()
	for _, c := range configs {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(c)>>24), byte(len(c)>>16), byte(len(c)>>8), byte(len(c))
		h.Write(n[:])
		h.Write(c)
	}
	return strconv.FormatUint(uint64(h.Sum32())|1<<32, 16)[1:]
}

// privateFile matches gohlslib's init and segment names:
// PREFIX_video1_init.mp4, PREFIX_audio2_seg12.mp4.
var privateFile = regexp.MustCompile(`\b([0-9a-f]{12})_([a-z]+[0-9]+)_(init|seg([0-9]+))\.mp4`)

// publicFile matches the public names: video1_1a2b3c4d_init.mp4,
// audio2_1a2b3c4d_s1234.mp4.
var publicFile = regexp.MustCompile(`^([a-z]+[0-9]+)_([0-9a-f]{8})_(init|s([0-9]+))\.mp4$`)

// prefixIn returns gohlslib's file prefix as a media playlist shows it.
func prefixIn(playlist []byte) string {
	if m := privateFile.FindSubmatch(playlist); m != nil {
		return string(m[1])
	}
	return ""
}

// playlist rewrites a media playlist: the media sequence number, and the
// init and segment URIs.
func (nm names) playlist(body []byte) []byte {
	lines := strings.Split(string(body), "\n")
	for i, line := range lines {
		if v, ok := strings.CutPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"); ok {
			if seq, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				lines[i] = "#EXT-X-MEDIA-SEQUENCE:" + strconv.FormatInt(seq+nm.offset, 10)
			}
		} else if strings.Contains(line, ".mp4") {
			lines[i] = privateFile.ReplaceAllStringFunc(line, nm.public)
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

// public names a gohlslib file of this session.
func (nm names) public(private string) string {
	m := privateFile.FindStringSubmatch(private)
	if m == nil || m[1] != nm.prefix {
		return private
	}
	if m[3] == "init" {
		return m[2] + "_" + nm.tag + "_init.mp4"
	}
	id, err := strconv.ParseInt(m[4], 10, 64)
	if err != nil {
		return private
	}
	return m[2] + "_" + nm.tag + "_s" + strconv.FormatInt(id+nm.offset, 10) + ".mp4"
}

// private returns gohlslib's name of a public file name of this session,
// and false for a public name of another session (another configuration)
// or a segment number before the session's. Other names are returned as
// they are.
func (nm names) private(file string) (string, bool) {
	m := publicFile.FindStringSubmatch(file)
	if m == nil {
		return file, true
	}
	if m[2] != nm.tag || nm.prefix == "" {
		return "", false
	}
	if m[3] == "init" {
		return nm.prefix + "_" + m[1] + "_init.mp4", true
	}
	seq, err := strconv.ParseInt(m[4], 10, 64)
	if err != nil || seq < nm.offset {
		return "", false
	}
	return nm.prefix + "_" + m[1] + "_seg" + strconv.FormatInt(seq-nm.offset, 10) + ".mp4", true
}

// query takes a low-latency playlist request's _HLS_msn back to gohlslib's
// numbers. A number before the session's first asks for nothing gohlslib
// has: the request becomes one for the playlist as it is.
func (nm names) query(raw string) string {
	if nm.offset == 0 || !strings.Contains(raw, "_HLS_msn") {
		return raw
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return raw
	}
	msn, err := strconv.ParseInt(q.Get("_HLS_msn"), 10, 64)
	if err != nil {
		return raw
	}
	if msn < nm.offset {
		q.Del("_HLS_msn")
		q.Del("_HLS_part")
	} else {
		q.Set("_HLS_msn", strconv.FormatInt(msn-nm.offset, 10))
	}
	return q.Encode()
}

// names returns the session's naming as far as it is known: ok is false
// until its segment numbers are.
func (n *numbering) names(tag string) (names, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return names{tag: tag, offset: n.offset, prefix: n.prefix}, n.known
}

// learn records gohlslib's prefix from a media playlist it produced.
func (n *numbering) learn(playlist []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.prefix == "" {
		n.prefix = prefixIn(playlist)
	}
}
