package vod

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/meshcast/meshcast/internal/media"
)

// tsBase is added to every MPEG-TS timestamp so that none, nor the clock
// reference a little before it, is negative.
const tsBase = Clock

// maxSpan is the largest stretch of the file a segment is read from in one
// call; a segment spread wider is read sample by sample.
const maxSpan = 64 << 20

// segment is one HLS media segment: a stretch of each track.
type segment struct {
	start, end int64 // Clock ticks
	video      [2]int
	audio      [2]int
}

// plan cuts x into segments of at least target ticks, each starting at a
// video keyframe (at any audio frame for audio-only assets). It depends on
// the index alone, so every node cuts an asset the same way.
func plan(x *Index, target int64) []segment {
	lead := x.Video
	if lead == nil {
		lead = x.Audio
	}
	var cuts []int // sample indexes of lead that start a segment
	last := int64(0)
	for i, s := range lead.Samples {
		if i == 0 || s.Key && s.DTS-last >= target {
			cuts = append(cuts, i)
			last = s.DTS
		}
	}
	end := lead.Duration
	if x.Video != nil && x.Audio != nil {
		end = max(end, x.Audio.Duration)
	}
	segs := make([]segment, len(cuts))
	a := 0
	for k, c := range cuts {
		sg := &segs[k]
		sg.start = lead.Samples[c].DTS
		if k == 0 {
			sg.start = 0
		}
		next := len(lead.Samples)
		sg.end = end
		if k+1 < len(cuts) {
			next = cuts[k+1]
			sg.end = lead.Samples[next].DTS
		}
		if x.Video != nil {
			sg.video = [2]int{c, next}
			if x.Audio != nil {
				from := a
				for a < len(x.Audio.Samples) && (k+1 == len(cuts) || x.Audio.Samples[a].DTS < sg.end) {
					a++
				}
				sg.audio = [2]int{from, a}
			}
		} else {
			sg.audio = [2]int{c, next}
		}
	}
	return segs
}

// playlist writes the VOD media playlist of segs, whose URIs are
// prefix + the segment's number + ".ts" + query.
func playlist(segs []segment, prefix, query string) []byte {
	longest := 0.0
	for _, s := range segs {
		longest = max(longest, ticks(s.end-s.start).Seconds())
	}
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n", int(math.Ceil(longest)))
	for i, s := range segs {
		fmt.Fprintf(&b, "#EXTINF:%.6f,\n%s%d.ts%s\n", ticks(s.end-s.start).Seconds(), prefix, i, query)
	}
	b.WriteString("#EXT-X-ENDLIST\n")
	return []byte(b.String())
}

// writeSegment writes segment sg of x, read from src, as MPEG-TS.
func writeSegment(w io.Writer, x *Index, sg segment, src io.ReaderAt) error {
	var vs, as []Sample
	if x.Video != nil {
		vs = x.Video.Samples[sg.video[0]:sg.video[1]]
	}
	if x.Audio != nil {
		as = x.Audio.Samples[sg.audio[0]:sg.audio[1]]
	}
	rd, err := readSpan(src, vs, as)
	if err != nil {
		return err
	}
	mw := &mpegts.Writer{W: w}
	var vt, at *mpegts.Track
	if x.Video != nil {
		vt = &mpegts.Track{Codec: &tscodecs.H264{}}
		if x.Video.Video.HEVC != nil {
			vt.Codec = &tscodecs.H265{}
		}
		mw.Tracks = append(mw.Tracks, vt)
	}
	if x.Audio != nil {
		at = &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: x.Audio.AAC.Config}}
		mw.Tracks = append(mw.Tracks, at)
	}
	if err := mw.Initialize(); err != nil {
		return fmt.Errorf("vod: segment: %w", err)
	}
	for len(vs) > 0 || len(as) > 0 {
		if len(vs) > 0 && (len(as) == 0 || vs[0].DTS <= as[0].DTS) {
			s := vs[0]
			vs = vs[1:]
			b, err := rd(s)
			if err != nil {
				return err
			}
			nalus, err := media.AVCCToNALUs(b)
			if err != nil {
				return fmt.Errorf("vod: segment: %w", err)
			}
			if len(nalus) == 0 {
				continue
			}
			nalus = x.Video.Video.WithParamSets(nalus, s.Key)
			pts, dts := tsBase+s.DTS+int64(s.CTS), tsBase+s.DTS
			if x.Video.Video.HEVC != nil {
				err = mw.WriteH265(vt, pts, dts, nalus)
			} else {
				err = mw.WriteH264(vt, pts, dts, nalus)
			}
			if err != nil {
				return fmt.Errorf("vod: segment: %w", err)
			}
			continue
		}
		s := as[0]
		as = as[1:]
		b, err := rd(s)
		if err != nil {
			return err
		}
		if err := mw.WriteMPEG4Audio(at, tsBase+s.DTS, [][]byte{b}); err != nil {
			return fmt.Errorf("vod: segment: %w", err)
		}
	}
	return nil
}

// readSpan returns a reader of samples' payloads: from one read of the
// stretch of the file they lie in when it is small enough, else one read
// each.
func readSpan(src io.ReaderAt, lists ...[]Sample) (func(Sample) ([]byte, error), error) {
	lo, hi := int64(math.MaxInt64), int64(0)
	for _, l := range lists {
		for _, s := range l {
			lo, hi = min(lo, s.Off), max(hi, s.End())
		}
	}
	if hi > lo && hi-lo <= maxSpan {
		buf := make([]byte, hi-lo)
		if err := readFull(src, buf, lo); err != nil {
			return nil, err
		}
		return func(s Sample) ([]byte, error) { return buf[s.Off-lo : s.End()-lo], nil }, nil
	}
	return func(s Sample) ([]byte, error) {
		b := make([]byte, s.Size)
		return b, readFull(src, b, s.Off)
	}, nil
}

// segmentBytes returns segment n of x as MPEG-TS.
func segmentBytes(x *Index, segs []segment, n int, src io.ReaderAt) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeSegment(&buf, x, segs[n], src); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parseSegmentFile splits "VERSION-N.ts" into the version and N.
func parseSegmentFile(file string) (version string, n int, ok bool) {
	base, ok := strings.CutSuffix(file, ".ts")
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(base[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != base[i+1:] {
		return "", 0, false
	}
	return base[:i], n, true
}

// readFull reads len(b) bytes at off.
func readFull(src io.ReaderAt, b []byte, off int64) error {
	n, err := src.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("vod: read: %w", err)
}
