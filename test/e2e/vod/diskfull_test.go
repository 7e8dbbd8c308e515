//go:build linux

package vod

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// smallFSSize is the file system the disk-full tests fill: about ten
// seconds of publishTestSource's stream.
const smallFSSize = 1 << 20

// logLines returns the JSON log records of a process started with
// --log-format json whose msg is msg.
func logLines(p *e2eutil.Proc, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(p.Stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// warnings returns the process's log records at WARN or ERROR.
func warnings(p *e2eutil.Proc) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(p.Stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && (rec["level"] == "WARN" || rec["level"] == "ERROR") {
			out = append(out, rec)
		}
	}
	return out
}

// wantErrno is the error a full SmallFS gives.
func wantErrno(fs *e2eutil.SmallFS) string {
	if fs.Mode == e2eutil.SmallFSRlimit {
		return "EFBIG"
	}
	return "ENOSPC"
}

// A recording that fills its disk stops with one log line that names the
// stream, the file and the errno, and is counted as disk_full; the
// stream's viewer keeps receiving frames at the same pace; the file is cut
// after its last complete FLV tag, finished as .flv, decodes to its end
// without an error and is in the library.
func TestRecordDiskFull(t *testing.T) {
	fs := e2eutil.NewSmallFS(t, smallFSSize)
	dir := filepath.Join(fs.Dir, "recordings")
	p := fs.StartProcess(t, "--record", "all", "--record-dir", dir, "--log-format", "json")
	done, stop := publishTestSource(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/full", p.RTMPPort), 60)
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/full")
	v := e2eutil.PlayFLV(t, p.HTTPURL+"/live/full.flv")
	defer v.Close()

	const msg = "recording stopped: disk full"
	var line map[string]any
	testutil.WaitFor(t, 45*time.Second, "the recording to fill the disk", func() bool {
		if l := logLines(p, msg); len(l) > 0 {
			line = l[0]
			return true
		}
		return false
	})
	atFailure, failedAt := v.Video.Load(), time.Now()
	v.Gaps.Reset()
	t.Logf("log: %v", line)
	if line["level"] != "ERROR" || line["stream"] != "live/full" || line["errno"] != wantErrno(fs) ||
		!strings.HasSuffix(fmt.Sprint(line["file"]), ".flv.part") || !strings.HasPrefix(fmt.Sprint(line["file"]), "live-full-") {
		t.Errorf("disk-full log line %v; want level ERROR, stream live/full, file live-full-*.flv.part, errno %s", line, wantErrno(fs))
	}
	if !strings.Contains(fmt.Sprint(line["err"]), map[string]string{"ENOSPC": "no space left on device", "EFBIG": "file too large"}[wantErrno(fs)]) {
		t.Errorf("err %q does not say what the kernel said", line["err"])
	}
	const failed = `meshcast_recordings_failed_total{reason="disk_full"}`
	testutil.WaitFor(t, 5*time.Second, "the failure counted", func() bool { return metric(t, p.HTTPURL, failed) == 1 })

	// The stream and its viewer go on: 3 s more of frames at 30 fps,
	// without a pause.
	testutil.WaitFor(t, 10*time.Second, "frames after the disk filled", func() bool { return v.Video.Load() >= atFailure+75 })
	if gap := v.Gaps.Max(); gap > time.Second {
		t.Errorf("the viewer waited %v for a frame after the disk filled", gap)
	}
	if err, _ := v.Err.Load().(error); err != nil {
		t.Errorf("viewer: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the publisher stopped: %v", err)
	default:
	}
	after := v.Video.Load() - atFailure
	t.Logf("viewer: %d frames before the disk filled, %d in the %v after", atFailure, after, time.Since(failedAt).Round(time.Millisecond))

	// The file is finished: .flv, no .part, cut after its last complete
	// tag.
	var flvs, parts []string
	testutil.WaitFor(t, 10*time.Second, "the recording finished", func() bool {
		flvs, parts = recordDir(t, fs.Path(p, dir))
		return len(flvs) == 1 && len(parts) == 0
	})
	if want := strings.TrimSuffix(fmt.Sprint(line["file"]), ".part"); filepath.Base(flvs[0]) != want {
		t.Errorf("finished %s, want %s", filepath.Base(flvs[0]), want)
	}
	st, err := os.Stat(flvs[0])
	if err != nil {
		t.Fatal(err)
	}
	tags, video, size := readFLV(t, flvs[0])
	if size != st.Size() {
		t.Errorf("the file's %d tags end at byte %d of %d: not cut after the last complete tag", tags, size, st.Size())
	}
	if st.Size() > smallFSSize || st.Size() < smallFSSize/2 {
		t.Errorf("the file holds %d bytes; want most of the %d the disk had", st.Size(), smallFSSize)
	}
	if out := ffmpegErrors(t, flvs[0]); out != "" {
		t.Errorf("ffmpeg decoding the recording to its end: %s", out)
	}
	frames := e2eutil.DecodedFrames(t, flvs[0])
	if frames < 150 || frames != video {
		t.Errorf("the recording decodes to %d frames, holds %d video tags; want the same, over 150 (5 s)", frames, video)
	}
	name := strings.TrimSuffix(filepath.Base(flvs[0]), ".flv")
	assertInLibrary(t, p.HTTPURL, name, float64(frames)/30)
	if w := warnings(p); len(w) != 1 {
		t.Errorf("%d warnings and errors logged, want the one disk-full line: %v", len(w), w)
	}
	t.Logf("%s (%s): %d bytes, %d tags, %d frames decoded", name, fs.Mode, st.Size(), tags, frames)
	stop()
}

// readFLV reads the FLV file at path with meshcast's reader to its end
// and returns its tags, its video frames (decoder configuration aside) and
// the bytes they cover. A torn tag fails the test.
func readFLV(t *testing.T, path string) (tags, video int, size int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := flv.NewReader(bufio.NewReader(f))
	if _, _, err := r.ReadHeader(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	size = flv.HeaderSize // PreviousTagSize0 included
	for {
		typ, ts, body, err := r.ReadTag()
		if errors.Is(err, io.EOF) {
			return tags, video, size
		}
		if err != nil {
			t.Fatalf("%s: tag %d: %v", path, tags+1, err)
		}
		tags++
		size += flv.TagHeaderSize + int64(len(body)) + flv.PrevTagSizeLen
		if typ == flv.TagVideo {
			if p, err := flv.ParseVideo(ts, body); err == nil && !p.SeqHeader {
				video++
			}
		}
	}
}

// ffmpegErrors decodes the file at path to its end and returns what ffmpeg
// reported as errors: nothing for a whole file.
func ffmpegErrors(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("%v: %s", err, stderr.String())
	}
	return strings.TrimSpace(stderr.String())
}

// An upload that does not fit is refused with 507 Insufficient Storage
// and leaves nothing behind, neither the asset nor its temporary file: an
// upload that fits goes in after it.
func TestVODUploadDiskFull(t *testing.T) {
	fs := e2eutil.NewSmallFS(t, smallFSSize)
	p := fs.StartProcess(t, "--vod-dir", fs.Dir, "--log-format", "json")
	big, fits := vodClip(t, 30, "640x360"), vodClip(t, 4, "320x240")
	bst, _ := os.Stat(big)
	fst, _ := os.Stat(fits)
	if bst.Size() <= smallFSSize || fst.Size() >= smallFSSize/2 {
		t.Fatalf("clips of %d and %d bytes; want one over %d, one under half", bst.Size(), fst.Size(), smallFSSize)
	}

	code, body := upload(t, p.HTTPURL, "big.mp4", big)
	if code != 507 || !strings.Contains(string(body), "storage") {
		t.Errorf("PUT big.mp4 (%d bytes) on %d: %d %s; want 507", bst.Size(), smallFSSize, code, body)
	}
	entries, err := os.ReadDir(fs.Path(p, fs.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("after the refused upload the library holds %v; want nothing", names)
	}
	if code, body := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/vod"); code != 200 || strings.Contains(string(body), "big") {
		t.Errorf("GET /api/v1/vod: %d %s; want no asset", code, body)
	}
	l := logLines(p, "vod: upload refused: disk full; nothing of it kept")
	if len(l) != 1 || l[0]["level"] != "WARN" || l[0]["file"] != "big.mp4" || l[0]["errno"] != wantErrno(fs) {
		t.Errorf("disk-full log lines %v; want one WARN naming big.mp4 and %s", l, wantErrno(fs))
	}

	// The room the refused upload took is free again.
	if code, body := upload(t, p.HTTPURL, "fits.mp4", fits); code != 201 {
		t.Fatalf("PUT fits.mp4 (%d bytes) after the refusal: %d %s; want 201", fst.Size(), code, body)
	}
	if d := durationOf(t, p.HTTPURL+"/vod/fits.mp4"); d < 3.5 || d > 4.5 {
		t.Errorf("fits.mp4 plays %.2f s, want 4", d)
	}
	t.Logf("%s: %d-byte upload refused with 507, %d-byte one stored", fs.Mode, bst.Size(), fst.Size())
}
