package vod

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// remuxScale is the time scale of remuxed MP4 tracks: milliseconds, the
// clock of the FLV recordings they are made from, so the conversion is
// exact and a day fits a 32-bit duration.
const remuxScale = 1000

// ErrTooLargeToRemux refuses to remux a file whose samples exceed what a
// 32-bit progressive MP4 can address.
var ErrTooLargeToRemux = errors.New("vod: too large to serve as MP4: fetch the original file")

// remuxed is an MP4 file made from an asset of another container without
// copying its media: a header (ftyp, moov, the mdat box header) made by
// mediacommon's pmp4 from the index, followed by the samples' bytes, read
// from the original file on demand.
type remuxed struct {
	head  []byte
	parts []Sample // the samples in mdat order; Off is in the original
	ends  []int64  // ends[i]: offset in the MP4 just after parts[i]
	size  int64
}

// newRemuxed lays out x as a progressive MP4 file.
func newRemuxed(x *Index) (*remuxed, error) {
	var total int64
	for _, t := range x.tracks() {
		for _, s := range t.Samples {
			total += int64(s.Size)
		}
	}
	if total > math.MaxUint32-(64<<20) {
		return nil, ErrTooLargeToRemux
	}
	p := pmp4.Presentation{}
	rm := &remuxed{}
	// Marshal asks for each payload in mdat order: note the order and hand
	// back nothing, so it writes the header alone.
	order := func(s Sample) func() ([]byte, error) {
		return func() ([]byte, error) {
			rm.parts = append(rm.parts, s)
			return nil, nil
		}
	}
	for i, t := range x.tracks() {
		pt := &pmp4.Track{ID: i + 1, TimeScale: remuxScale}
		if v := t.Video; v != nil {
			if ps := v.ParamSets; v.HEVC != nil {
				pt.Codec = &codecs.H265{VPS: ps[0], SPS: ps[1], PPS: ps[2]}
			} else {
				pt.Codec = &codecs.H264{SPS: ps[0], PPS: ps[1]}
			}
		} else {
			pt.Codec = &codecs.MPEG4Audio{Config: t.AAC.Config}
		}
		ms := func(v int64) int64 { return v * remuxScale / Clock }
		pt.TimeOffset = int32(min(ms(t.Samples[0].DTS), math.MaxInt32))
		pt.Samples = make([]*pmp4.Sample, len(t.Samples))
		for k, s := range t.Samples {
			end := t.Duration
			if k+1 < len(t.Samples) {
				end = t.Samples[k+1].DTS
			}
			pt.Samples[k] = &pmp4.Sample{
				Duration:        uint32(max(ms(end)-ms(s.DTS), 0)),
				PTSOffset:       int32(ms(int64(s.CTS))),
				IsNonSyncSample: !s.Key,
				PayloadSize:     s.Size,
				GetPayload:      order(s),
			}
		}
		p.Tracks = append(p.Tracks, pt)
	}
	var head headWriter
	if err := p.Marshal(&head); err != nil {
		return nil, fmt.Errorf("vod: remux: %w", err)
	}
	rm.head = head.b
	rm.ends = make([]int64, len(rm.parts))
	off := int64(len(rm.head))
	for i, s := range rm.parts {
		off += int64(s.Size)
		rm.ends[i] = off
	}
	rm.size = off
	return rm, nil
}

// headWriter keeps what pmp4 writes: only the header, since payloads come
// back empty.
type headWriter struct{ b []byte }

func (h *headWriter) Write(p []byte) (int, error) {
	h.b = append(h.b, p...)
	return len(p), nil
}

// reader returns the MP4 file as a ReadSeeker over src, the original.
func (rm *remuxed) reader(src io.ReaderAt) io.ReadSeeker {
	return io.NewSectionReader(remuxReader{rm, src}, 0, rm.size)
}

// remuxReader reads the remuxed file at any offset.
type remuxReader struct {
	rm  *remuxed
	src io.ReaderAt
}

func (r remuxReader) ReadAt(p []byte, off int64) (int, error) {
	rm := r.rm
	n := 0
	for len(p) > 0 {
		if off >= rm.size {
			return n, io.EOF
		}
		if off < int64(len(rm.head)) {
			c := copy(p, rm.head[off:])
			n, off, p = n+c, off+int64(c), p[c:]
			continue
		}
		i := sort.Search(len(rm.ends), func(i int) bool { return rm.ends[i] > off })
		s := rm.parts[i]
		start := rm.ends[i] - int64(s.Size)
		c := int(min(int64(len(p)), rm.ends[i]-off))
		if err := readFull(r.src, p[:c], s.Off+off-start); err != nil {
			return n, err
		}
		n, off, p = n+c, off+int64(c), p[c:]
	}
	return n, nil
}
