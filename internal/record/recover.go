package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/flv"
)

// scan is what scanTags found in an FLV file.
type scan struct {
	size        int64 // bytes up to the end of the last complete tag
	tags        int
	first, last uint32 // timestamps of the first tag and the highest one, ms
}

func (sc scan) duration() time.Duration {
	if sc.tags == 0 {
		return 0
	}
	return time.Duration(sc.last-sc.first) * time.Millisecond
}

// maxHeaderExtra bounds the bytes between the 9-byte file header and the
// first tag (a DataOffset above 9), as the FLV reader does.
const maxHeaderExtra = 1 << 16

// errNotFLV reports a file that does not start with an FLV header.
var errNotFLV = errors.New("not an FLV file")

// scanTags walks the tags of the FLV file r of size bytes (FLV spec
// §E.2, §E.3): the 9-byte header and PreviousTagSize0, then tags of an
// 11-byte header, the body and a 4-byte PreviousTagSize. It stops at the
// first tag that is incomplete or does not hold together (a type FLV does
// not have, a PreviousTagSize that is not the tag's size), which is where
// a crash cut the file. A file too short for its header has no tags.
func scanTags(r io.ReaderAt, size int64) (scan, error) {
	var h [flv.HeaderSize]byte
	if size < flv.HeaderSize {
		return scan{}, nil
	}
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return scan{}, err
	}
	if h[0] != 'F' || h[1] != 'L' || h[2] != 'V' || h[3] != 1 {
		return scan{}, errNotFLV
	}
	offset := int64(binary.BigEndian.Uint32(h[5:9]))
	if offset < 9 || offset > 9+maxHeaderExtra {
		return scan{}, errNotFLV
	}
	pos := offset + flv.PrevTagSizeLen
	sc := scan{size: min(pos, size)}
	var th [flv.TagHeaderSize]byte
	var prev [flv.PrevTagSizeLen]byte
	for pos+flv.TagHeaderSize <= size {
		if _, err := r.ReadAt(th[:], pos); err != nil {
			return sc, err
		}
		if t := th[0]; t != flv.TagAudio && t != flv.TagVideo && t != flv.TagScript {
			break
		}
		n := int64(th[1])<<16 | int64(th[2])<<8 | int64(th[3])
		end := pos + flv.TagHeaderSize + n + flv.PrevTagSizeLen
		if end > size {
			break
		}
		if _, err := r.ReadAt(prev[:], end-flv.PrevTagSizeLen); err != nil {
			return sc, err
		}
		if int64(binary.BigEndian.Uint32(prev[:])) != flv.TagHeaderSize+n {
			break
		}
		ts := uint32(th[4])<<16 | uint32(th[5])<<8 | uint32(th[6]) | uint32(th[7])<<24
		if sc.tags == 0 {
			sc.first = ts
		}
		sc.last = max(sc.last, ts)
		sc.tags++
		pos, sc.size = end, end
	}
	return sc, nil
}

// repair cuts the FLV file at path after its last complete tag and syncs
// it.
func repair(path string) (scan, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return scan{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return scan{}, err
	}
	sc, err := scanTags(f, st.Size())
	if err != nil {
		return scan{}, err
	}
	if sc.size < st.Size() {
		if err := f.Truncate(sc.size); err != nil {
			return scan{}, err
		}
	}
	if err := f.Sync(); err != nil {
		return scan{}, err
	}
	return sc, f.Close()
}

// recoverAll finishes the .part files in the directory: recordings a
// crash interrupted. The Recorder has not started any of its own yet.
func (r *Recorder) recoverAll() error {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), PartExt) {
			r.recoverFile(strings.TrimSuffix(e.Name(), PartExt))
		}
	}
	return nil
}

// recoverFile cuts the .part file of recording name after its last
// complete tag and renames it to .flv; one without any tag is removed.
func (r *Recorder) recoverFile(name string) {
	part := filepath.Join(r.dir, name+PartExt)
	log := r.log.With("file", name+PartExt)
	st, err := os.Stat(part)
	if err != nil {
		log.Warn("leftover recording not recovered", "err", err)
		return
	}
	ended := st.ModTime().UTC()
	sc, err := repair(part)
	if err != nil {
		log.Warn("leftover recording not recovered", "err", err)
		return
	}
	if sc.tags == 0 {
		if err := os.Remove(part); err != nil {
			log.Warn("leftover recording without media not removed", "err", err)
			return
		}
		log.Info("leftover recording without media removed")
		return
	}
	final, err := r.finish(name)
	if err != nil {
		log.Warn("leftover recording not recovered", "err", err)
		return
	}
	dur := sc.duration()
	started, ok := nameTime(name)
	if !ok {
		started = ended.Add(-dur)
	}
	log.Info("recovered a recording interrupted by a crash", "to", final+Ext, "bytes", sc.size, "duration", dur)
	r.done(Done{
		Path:      filepath.Join(r.dir, final+Ext),
		Name:      final,
		Bytes:     sc.size,
		Duration:  dur,
		Started:   started,
		Ended:     ended,
		Recovered: true,
	})
}

// nameSuffix is the start time at the end of a recording's name, with the
// number that made the name unique, if any.
var nameSuffix = regexp.MustCompile(`-(\d{8}-\d{6})(?:-\d+)?$`)

// nameTime reads the start time from a recording's name.
func nameTime(name string) (time.Time, bool) {
	m := nameSuffix.FindStringSubmatch(name)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(timeLayout, m[1])
	return t, err == nil
}
