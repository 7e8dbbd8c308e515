package vod

import (
	"fmt"
	"io"

	amp4 "github.com/abema/go-mp4"

	"github.com/meshcast/meshcast/internal/media"
)

// MaxMoovSize bounds the movie box of an MP4 file, which holds every
// sample table and is read whole.
const MaxMoovSize = 128 << 20

// indexMP4 builds the index of a progressive MP4 file from its sample
// tables: the first H.264 track and the first AAC track. The boxes are
// parsed by github.com/abema/go-mp4.
func indexMP4(r io.ReaderAt, size int64) (*Index, error) {
	rs := io.NewSectionReader(r, 0, size)
	moovs, err := amp4.ExtractBox(rs, nil, amp4.BoxPath{amp4.BoxTypeMoov()})
	if err != nil {
		return nil, fmt.Errorf("%w: mp4: %v", ErrUnsupported, err)
	}
	if len(moovs) != 1 {
		return nil, fmt.Errorf("%w: mp4: %d movie boxes", ErrUnsupported, len(moovs))
	}
	if moovs[0].Size > MaxMoovSize {
		return nil, fmt.Errorf("%w: mp4: movie box of %d bytes", ErrUnsupported, moovs[0].Size)
	}
	traks, err := amp4.ExtractBox(rs, moovs[0], amp4.BoxPath{amp4.BoxTypeTrak()})
	if err != nil {
		return nil, fmt.Errorf("%w: mp4: %v", ErrUnsupported, err)
	}
	x := &Index{}
	for _, trak := range traks {
		t, err := mp4Track(rs, trak, size)
		if err != nil {
			return nil, err
		}
		switch {
		case t == nil:
		case t.Video != nil && x.Video == nil:
			x.Video = t
		case t.AAC != nil && x.Audio == nil:
			x.Audio = t
		}
	}
	return x, nil
}

// sampleTable is the sample table (stbl) of one track.
type sampleTable struct {
	scale uint32
	shift int64 // media time of the first edit
	stts  *amp4.Stts
	ctts  *amp4.Ctts
	stss  *amp4.Stss
	stsc  *amp4.Stsc
	stsz  *amp4.Stsz
	stco  []uint64
}

// mp4Track reads one track: nil, nil for a track of another codec.
func mp4Track(rs io.ReadSeeker, trak *amp4.BoxInfo, size int64) (*Track, error) {
	inStbl := func(b amp4.BoxType) amp4.BoxPath {
		return amp4.BoxPath{amp4.BoxTypeMdia(), amp4.BoxTypeMinf(), amp4.BoxTypeStbl(), b}
	}
	stsd := func(b ...amp4.BoxType) amp4.BoxPath {
		return append(inStbl(amp4.BoxTypeStsd()), b...)
	}
	// The codec first: a track of another codec is skipped unread.
	configs, err := amp4.ExtractBoxes(rs, trak, []amp4.BoxPath{
		stsd(amp4.BoxTypeAvc1(), amp4.BoxTypeAvcC()),
		stsd(amp4.StrToBoxType("avc3"), amp4.BoxTypeAvcC()),
		stsd(amp4.BoxTypeHvc1(), amp4.BoxTypeHvcC()),
		stsd(amp4.BoxTypeHev1(), amp4.BoxTypeHvcC()),
		stsd(amp4.BoxTypeMp4a(), amp4.BoxTypeEsds()),
		stsd(amp4.BoxTypeEncv()),
		stsd(amp4.BoxTypeEnca()),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: mp4: %v", ErrUnsupported, err)
	}
	t := &Track{}
	for _, c := range configs {
		switch c.Type {
		case amp4.BoxTypeEncv(), amp4.BoxTypeEnca():
			return nil, nil // encrypted: not ours to serve
		case amp4.BoxTypeAvcC(), amp4.BoxTypeHvcC():
			b, err := readBoxPayload(rs, c)
			if err != nil {
				return nil, err
			}
			codec := media.CodecH264
			if c.Type == amp4.BoxTypeHvcC() {
				codec = media.CodecH265
			}
			if t.Video, err = media.ParseVideoConfig(codec, b); err != nil {
				return nil, fmt.Errorf("%w: mp4: %v", ErrUnsupported, err)
			}
			if l := lengthSize(t.Video); l != 4 {
				return nil, fmt.Errorf("%w: mp4: NAL unit lengths of %d bytes", ErrUnsupported, l)
			}
		case amp4.BoxTypeEsds():
			esds, err := amp4.ExtractBoxWithPayload(rs, trak, stsd(amp4.BoxTypeMp4a(), amp4.BoxTypeEsds()))
			if err != nil || len(esds) == 0 {
				return nil, fmt.Errorf("%w: mp4: esds: %v", ErrUnsupported, err)
			}
			for _, d := range esds[0].Payload.(*amp4.Esds).Descriptors {
				if d.Tag == amp4.DecSpecificInfoTag && t.AAC == nil {
					if t.AAC, err = media.ParseAACConfig(d.Data); err != nil {
						return nil, nil // an AAC flavour (or another MPEG-4 audio) we do not serve
					}
				}
			}
		}
		if t.Video != nil || t.AAC != nil {
			break
		}
	}
	if t.Video == nil && t.AAC == nil {
		return nil, nil
	}
	boxes, err := amp4.ExtractBoxesWithPayload(rs, trak, []amp4.BoxPath{
		{amp4.BoxTypeEdts(), amp4.BoxTypeElst()},
		{amp4.BoxTypeMdia(), amp4.BoxTypeMdhd()},
		inStbl(amp4.BoxTypeStts()),
		inStbl(amp4.BoxTypeCtts()),
		inStbl(amp4.BoxTypeStss()),
		inStbl(amp4.BoxTypeStsc()),
		inStbl(amp4.BoxTypeStsz()),
		inStbl(amp4.BoxTypeStco()),
		inStbl(amp4.BoxTypeCo64()),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: mp4: %v", ErrUnsupported, err)
	}
	var st sampleTable
	for _, b := range boxes {
		switch p := b.Payload.(type) {
		case *amp4.Elst:
			if len(p.Entries) > 0 && st.shift == 0 {
				st.shift = max(p.GetMediaTime(0), 0)
			}
		case *amp4.Mdhd:
			st.scale = p.Timescale
		case *amp4.Stts:
			st.stts = p
		case *amp4.Ctts:
			st.ctts = p
		case *amp4.Stss:
			st.stss = p
		case *amp4.Stsc:
			st.stsc = p
		case *amp4.Stsz:
			st.stsz = p
		case *amp4.Stco:
			st.stco = make([]uint64, len(p.ChunkOffset))
			for i, o := range p.ChunkOffset {
				st.stco[i] = uint64(o)
			}
		case *amp4.Co64:
			st.stco = p.ChunkOffset
		}
	}
	if t.Samples, err = st.samples(t.Video != nil, size); err != nil {
		return nil, err
	}
	return t, nil
}

// readBoxPayload reads the payload of a small box.
func readBoxPayload(rs io.ReadSeeker, b *amp4.BoxInfo) ([]byte, error) {
	n := b.Size - b.HeaderSize
	if n > MaxConfigSize {
		return nil, fmt.Errorf("%w: mp4: %s box of %d bytes", ErrUnsupported, b.Type, n)
	}
	buf := make([]byte, n)
	if _, err := rs.Seek(int64(b.Offset+b.HeaderSize), io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rs, buf); err != nil {
		return nil, fmt.Errorf("%w: mp4: %s box: %v", ErrUnsupported, b.Type, err)
	}
	return buf, nil
}

// samples expands the sample table. Every sample must lie inside the file.
func (st *sampleTable) samples(video bool, size int64) ([]Sample, error) {
	bad := func(what string) ([]Sample, error) {
		return nil, fmt.Errorf("%w: mp4: %s", ErrUnsupported, what)
	}
	if st.scale == 0 || st.stts == nil || st.stsc == nil || st.stsz == nil || st.stco == nil {
		return bad("incomplete sample table")
	}
	n := int(st.stsz.SampleCount)
	if n == 0 || n > MaxSamples {
		return bad(fmt.Sprintf("%d samples", n))
	}
	if st.stsz.SampleSize == 0 && len(st.stsz.EntrySize) != n {
		return bad("sample sizes do not match the sample count")
	}
	if int64(st.stsz.SampleSize)*int64(n) > size {
		return bad("samples larger than the file")
	}
	out := make([]Sample, n)

	// Sizes and decode times.
	i := 0
	dts := int64(0)
	for _, e := range st.stts.Entries {
		for k := uint32(0); k < e.SampleCount && i < n; k++ {
			out[i].DTS = dts
			dts += int64(e.SampleDelta)
			i++
		}
	}
	if i != n {
		return bad("decode times do not cover every sample")
	}
	for i := range out {
		sz := st.stsz.SampleSize
		if sz == 0 {
			sz = st.stsz.EntrySize[i]
		}
		out[i].Size = sz
		out[i].Key = !video || st.stss == nil // no stss: every sample is a sync sample
	}
	if video && st.stss != nil {
		for _, k := range st.stss.SampleNumber {
			if k >= 1 && int(k) <= n {
				out[k-1].Key = true
			}
		}
	}

	// Composition offsets.
	if st.ctts != nil {
		i := 0
		for j, e := range st.ctts.Entries {
			off := st.ctts.GetSampleOffset(j)
			for k := uint32(0); k < e.SampleCount && i < n; k++ {
				out[i].CTS = int32(rescale(off, st.scale))
				i++
			}
		}
	}

	// Offsets: samples run consecutively through chunks.
	chunks := len(st.stco)
	i = 0
	for j, e := range st.stsc.Entries {
		if e.FirstChunk == 0 || e.SamplesPerChunk == 0 {
			return bad("bad sample-to-chunk entry")
		}
		last := chunks
		if j+1 < len(st.stsc.Entries) {
			last = int(st.stsc.Entries[j+1].FirstChunk) - 1
		}
		for c := int(e.FirstChunk) - 1; c < last && c < chunks && i < n; c++ {
			off := int64(st.stco[c])
			for k := uint32(0); k < e.SamplesPerChunk && i < n; k++ {
				out[i].Off = off
				off += int64(out[i].Size)
				i++
			}
		}
	}
	if i != n {
		return bad("chunks do not cover every sample")
	}
	for i := range out {
		s := &out[i]
		if s.Off < 0 || s.End() > size {
			return bad("a sample lies outside the file")
		}
		s.DTS = rescale(s.DTS-st.shift, st.scale)
	}
	return out, nil
}
