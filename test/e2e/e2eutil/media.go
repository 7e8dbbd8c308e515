//go:build unix

package e2eutil

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
)

// SmallFLV makes a 20 s 320x180 H.264/AAC FLV at about 250 kbit/s for many
// cheap publishers (ffmpeg -c copy).
func SmallFLV(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "small.flv")
	b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", "20", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "200k", "-g", "50", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "48k", "-f", "flv", out).CombinedOutput()
	if err != nil {
		t.Fatalf("make small.flv: %v\n%s", err, b)
	}
	return out
}

var (
	clipOnce sync.Once
	clipTags []FLVTag
	clipErr  error
)

// FLVTag is an audio or video tag of an FLV file.
type FLVTag struct {
	Type uint8  // rtmp.TypeAudio or rtmp.TypeVideo
	TS   uint32 // timestamp, ms
	Body []byte // the tag's body, as an RTMP message's payload
}

// Clip returns the audio and video tags of the first 3 s of input.mp4.
func Clip(t *testing.T) []FLVTag {
	t.Helper()
	in := Input(t)
	d := dir(t)
	clipOnce.Do(func() {
		path := filepath.Join(d, "clip.flv")
		out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", in,
			"-t", "3", "-c", "copy", "-f", "flv", path).CombinedOutput()
		if err != nil {
			clipErr = fmt.Errorf("make clip.flv: %v: %s", err, out)
			return
		}
		f, err := os.Open(path)
		if err != nil {
			clipErr = err
			return
		}
		defer f.Close()
		r := flv.NewReader(f)
		if _, _, err := r.ReadHeader(); err != nil {
			clipErr = err
			return
		}
		for {
			typ, ts, body, err := r.ReadTag()
			if err == io.EOF {
				break
			}
			if err != nil {
				clipErr = err
				return
			}
			if typ == rtmp.TypeAudio || typ == rtmp.TypeVideo {
				clipTags = append(clipTags, FLVTag{typ, ts, body})
			}
		}
	})
	if clipErr != nil {
		t.Fatal(clipErr)
	}
	return clipTags
}

// Input returns the shared input.mp4, making it on first use.
func Input(t *testing.T) string {
	t.Helper()
	return SharedClip(t, "input.mp4", "640x360", 60, "128k")
}

// sharedClips are the test media made once per test run, by file name.
var sharedClips sync.Map // string -> *sharedClipResult

type sharedClipResult struct {
	once sync.Once
	path string
	err  error
}

// SharedClip returns a clip of the tests' media directory, made on first
// use with ffmpeg: secs seconds of lavfi testsrc2 at size, 30 fps, H.264
// (ultrafast, keyframes every 2 s) and a 48 kHz AAC sine at audioBitrate.
func SharedClip(t *testing.T, file, size string, secs int, audioBitrate string) string {
	t.Helper()
	return SharedFile(t, file,
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(secs), "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", audioBitrate)
}

// SharedFile returns file in the tests' media directory, made on first use
// by ffmpeg with args (inputs and encoding options; the output is file).
func SharedFile(t *testing.T, file string, args ...string) string {
	t.Helper()
	testutil.Need(t, "ffmpeg", "ffprobe")
	v, _ := sharedClips.LoadOrStore(file, &sharedClipResult{})
	c := v.(*sharedClipResult)
	d := dir(t)
	c.once.Do(func() {
		c.path = filepath.Join(d, file)
		args = append(append([]string{"-hide_banner", "-loglevel", "error", "-y"}, args...), c.path)
		out, err := exec.Command("ffmpeg", args...).CombinedOutput()
		if err != nil {
			c.err = fmt.Errorf("make %s: %v: %s", file, err, out)
		}
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.path
}
