package vod

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/meshcast/meshcast/internal/media"
)

// Clock is the rate of every timestamp of an index: the 90 kHz clock of
// MPEG-TS. FLV's milliseconds and the usual MP4 time scales convert to it
// exactly or nearly so.
const Clock = 90000

// MaxSamples bounds the samples of one asset (about 14 hours of 30 fps
// video with 48 kHz AAC), so that an index, 32 bytes a sample, stays under
// 128 MiB whatever a file claims.
const MaxSamples = 4 << 20

// MaxConfigSize bounds a decoder configuration (avcC, AudioSpecificConfig).
const MaxConfigSize = 64 << 10

// ErrUnsupported refuses a file meshcast cannot serve: no H.264 or AAC
// track, an encrypted or damaged sample table, or NAL units not prefixed
// with 4-byte lengths.
var ErrUnsupported = errors.New("vod: unsupported media")

// Sample is one access unit of a track: where its bytes are and when it is
// decoded and shown.
type Sample struct {
	Off  int64  // offset of its payload in the file
	DTS  int64  // decode time in Clock ticks from the start of the asset
	Size uint32 // payload bytes
	CTS  int32  // presentation offset in Clock ticks: PTS = DTS + CTS
	Key  bool   // video: a random access point (IDR)
}

// End returns the offset just after the sample's payload.
func (s Sample) End() int64 { return s.Off + int64(s.Size) }

// Track is one elementary stream of an asset. Video payloads are H.264 or
// HEVC access units of 4-byte length-prefixed NAL units; audio payloads
// are raw AAC frames.
type Track struct {
	Video   *media.VideoConfig // video tracks: H.264 or HEVC
	AAC     *media.AACConfig   // audio tracks
	Samples []Sample
	// Duration is the end of the last sample: its DTS plus the duration
	// of the one before it, in Clock ticks.
	Duration int64
}

// Index is what serving an asset needs: its video and AAC tracks (either
// may be nil, not both).
type Index struct {
	Video *Track
	Audio *Track
	// Size is the length of the file the index was built from.
	Size int64
}

// Duration returns the asset's length: the longer of its tracks.
func (x *Index) Duration() time.Duration {
	var d int64
	for _, t := range x.tracks() {
		d = max(d, t.Duration)
	}
	return ticks(d)
}

// tracks returns the index's tracks, video first.
func (x *Index) tracks() []*Track {
	var ts []*Track
	if x.Video != nil {
		ts = append(ts, x.Video)
	}
	if x.Audio != nil {
		ts = append(ts, x.Audio)
	}
	return ts
}

// ticks converts Clock ticks to a duration.
func ticks(t int64) time.Duration {
	return time.Duration(t/Clock)*time.Second + time.Duration(t%Clock)*time.Second/Clock
}

// rescale converts v ticks of a clock at rate Hz to Clock ticks, without
// overflowing for any time a file can hold.
func rescale(v int64, rate uint32) int64 {
	r := int64(rate)
	return v/r*Clock + v%r*Clock/r
}

// finish sets t's duration and checks what every served track needs.
func (t *Track) finish() error {
	n := len(t.Samples)
	if n == 0 {
		return fmt.Errorf("%w: a track without samples", ErrUnsupported)
	}
	last := t.Samples[n-1].DTS
	step := int64(0)
	if n > 1 {
		step = last - t.Samples[n-2].DTS
	}
	t.Duration = last + max(step, 0)
	return nil
}

// normalize shifts every timestamp of x so that the earliest decode time
// is zero, keeping the tracks' relative offsets.
func (x *Index) normalize() {
	first := int64(0)
	set := false
	for _, t := range x.tracks() {
		if d := t.Samples[0].DTS; !set || d < first {
			first, set = d, true
		}
	}
	if first == 0 {
		return
	}
	for _, t := range x.tracks() {
		for i := range t.Samples {
			t.Samples[i].DTS -= first
		}
		t.Duration -= first
	}
}

// Kind is the container of an asset's file.
type Kind string

// Containers the library serves.
const (
	KindMP4 Kind = "mp4"
	KindFLV Kind = "flv"
)

// BuildIndex reads the sample table of a file of the given kind.
func BuildIndex(kind Kind, r io.ReaderAt, size int64) (*Index, error) {
	var x *Index
	var err error
	switch kind {
	case KindMP4:
		x, err = indexMP4(r, size)
	case KindFLV:
		x, err = indexFLV(r, size)
	default:
		return nil, fmt.Errorf("%w: container %q", ErrUnsupported, kind)
	}
	if err != nil {
		return nil, err
	}
	if x.Video == nil && x.Audio == nil {
		return nil, fmt.Errorf("%w: no H.264 or AAC track", ErrUnsupported)
	}
	for _, t := range x.tracks() {
		if err := t.finish(); err != nil {
			return nil, err
		}
	}
	x.Size = size
	x.normalize()
	return x, nil
}
