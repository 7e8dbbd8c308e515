package record

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
)

// clipFLV is an FLV file as a recording writes it: metadata, sequence
// headers, then 2 GOPs of video and audio. ends are the offsets where its
// tags end.
func clipFLV() (file []byte, ends []int) {
	file = flv.AppendHeader(nil, true, true)
	add := func(p *media.Packet) {
		file = flv.AppendTag(file, p)
		ends = append(ends, len(file))
	}
	add(metadata(0))
	add(vcfg(0))
	add(acfg(0))
	for i := range 60 {
		add(vframe(int64(i)*33, i%30 == 0, 0))
		add(aframe(int64(i) * 33))
	}
	return file, ends
}

func TestRecoverInterruptedRecordings(t *testing.T) {
	file, ends := clipFLV()
	last := ends[len(ends)-1]
	mid := ends[40] // the end of a tag in the middle of the file
	type want struct {
		size int // the recovered file's size; 0: removed
		tags int
	}
	cases := map[string]struct {
		data []byte
		want want
	}{
		"cut in the file header":             {file[:5], want{}},
		"header only":                        {file[:flv.HeaderSize], want{}},
		"cut in the first tag":               {file[:ends[0]-3], want{}},
		"cut in a tag header":                {file[:mid+5], want{mid, 41}},
		"cut in a tag body":                  {file[:mid+flv.TagHeaderSize+50], want{mid, 41}},
		"cut in a PreviousTagSize":           {file[:ends[41]-2], want{mid, 41}},
		"cut after a tag":                    {file[:mid], want{mid, 41}},
		"complete":                           {file, want{last, len(ends)}},
		"garbage after a tag (a torn write)": {append(bytes.Clone(file[:mid]), bytes.Repeat([]byte{0xff}, 100)...), want{mid, 41}},
		"zeros after a tag (a sparse end)":   {append(bytes.Clone(file[:mid]), make([]byte, 4096)...), want{mid, 41}},
	}
	dir := t.TempDir()
	i := 0
	names := map[string]string{} // recording name by case
	for c, tc := range cases {
		i++
		name := fmt.Sprintf("live-cam%d-20260102-030405", i)
		names[c] = name
		if err := os.WriteFile(filepath.Join(dir, name+PartExt), tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Not a recording: left alone, as are other files.
	for _, other := range []string{"notes.flv.part", "done.flv", "x.txt"} {
		if err := os.WriteFile(filepath.Join(dir, other), []byte("not FLV data at all"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	got := map[string]Done{}
	rec, err := New(Config{
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		OnDone: func(d Done) { got[d.Name] = d },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()

	for c, tc := range cases {
		name := names[c]
		if _, err := os.Stat(filepath.Join(dir, name+PartExt)); !os.IsNotExist(err) {
			t.Errorf("%s: the .part file is still there (%v)", c, err)
		}
		path := filepath.Join(dir, name+Ext)
		st, err := os.Stat(path)
		if tc.want.size == 0 {
			if err == nil || got[name] != (Done{}) {
				t.Errorf("%s: recovered, want removed", c)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		if st.Size() != int64(tc.want.size) {
			t.Errorf("%s: recovered %d bytes, want %d", c, st.Size(), tc.want.size)
		}
		_, _, tags := readFLV(t, path) // every tag parses, to the end
		if len(tags) != tc.want.tags {
			t.Errorf("%s: %d tags, want %d", c, len(tags), tc.want.tags)
		}
		lastTS := tags[len(tags)-1].ts
		want := Done{
			Path: path, Name: name, Bytes: int64(tc.want.size), Duration: time.Duration(lastTS) * time.Millisecond,
			Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Ended: got[name].Ended, Recovered: true,
		}
		if got[name] != want {
			t.Errorf("%s: Done = %+v, want %+v", c, got[name], want)
		}
	}
	for _, other := range []string{"notes.flv.part", "done.flv", "x.txt"} {
		if b, err := os.ReadFile(filepath.Join(dir, other)); err != nil || string(b) != "not FLV data at all" {
			t.Errorf("%s changed: %q, %v", other, b, err)
		}
	}
	if st := rec.Stats(); st.Finished != uint64(len(got)) {
		t.Errorf("Stats().Finished = %d, want %d", st.Finished, len(got))
	}
}

// A recording cut by a crash and recovered plays as far as it was
// written: the recovered file is the recording up to the last complete
// tag, byte for byte.
func TestRecoveredIsAPrefix(t *testing.T) {
	file, ends := clipFLV()
	dir := t.TempDir()
	for _, cut := range []int{ends[10] + 1, ends[70] + 11, len(file) - 1} {
		path := filepath.Join(dir, "live-cam-20260102-030405"+PartExt)
		if err := os.WriteFile(path, file[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		sc, err := repair(path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, e := range ends {
			if e <= cut {
				want = e
			}
		}
		if len(b) != want || !bytes.Equal(b, file[:want]) || sc.size != int64(want) {
			t.Errorf("cut at %d: repaired to %d bytes (scan %d), want the first %d", cut, len(b), sc.size, want)
		}
	}
}

// FuzzScanTags checks that whatever a crash (or anything else) left in a
// file, the recovered part is the longest prefix of complete tags: the
// FLV reader reads exactly those, and scanning it again changes nothing.
func FuzzScanTags(f *testing.F) {
	file, ends := clipFLV()
	f.Add(file)
	f.Add(file[:ends[5]+7])
	f.Add(file[:flv.HeaderSize])
	f.Add([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00\x12\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := scanTags(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, errNotFLV) {
				t.Fatalf("scanTags: %v", err)
			}
			return
		}
		if sc.size < 0 || sc.size > int64(len(data)) {
			t.Fatalf("scan %+v of %d bytes", sc, len(data))
		}
		again, err := scanTags(bytes.NewReader(data[:sc.size]), sc.size)
		if err != nil || again != sc {
			t.Fatalf("scanning the recovered part again: %+v, %v; first %+v", again, err, sc)
		}
		if sc.tags == 0 {
			return
		}
		r := flv.NewReader(bytes.NewReader(data[:sc.size]))
		if _, _, err := r.ReadHeader(); err != nil {
			t.Fatalf("recovered part: %v", err)
		}
		n := 0
		for {
			_, _, _, err := r.ReadTag()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("recovered part: tag %d: %v", n, err)
			}
			n++
		}
		if n != sc.tags {
			t.Fatalf("the FLV reader reads %d tags of the recovered part, the scan %d", n, sc.tags)
		}
	})
}
