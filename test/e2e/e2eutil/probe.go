//go:build unix

package e2eutil

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ProbeCodecs runs ffprobe on a live URL and checks for H.264 and AAC.
func ProbeCodecs(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json", url).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	if !strings.Contains(string(b), `"h264"`) || !strings.Contains(string(b), `"aac"`) {
		t.Errorf("ffprobe %s: %s, want h264 and aac", url, b)
	}
}

// ProbeVideo returns what ffprobe says of url's first video stream.
func ProbeVideo(url string) (codec string, width, height int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "stream=width,height,codec_name", "-of", "json", url).Output()
	if err != nil {
		return "", 0, 0, fmt.Errorf("ffprobe %s: %v", url, err)
	}
	var info struct {
		Streams []struct {
			Codec         string `json:"codec_name"`
			Width, Height int
		} `json:"streams"`
	}
	if json.Unmarshal(out, &info) != nil || len(info.Streams) == 0 {
		return "", 0, 0, fmt.Errorf("ffprobe %s: %s", url, out)
	}
	s := info.Streams[0]
	return s.Codec, s.Width, s.Height, nil
}

// Probe is what ffprobe reports about a file.
type Probe struct {
	Codecs    []string  // codec names of all streams
	VideoPTS  []float64 // presentation times of video packets, seconds
	Width     int       // of the video
	Height    int       // of the video
	AudioPkts int       // audio packets
}

// FFprobe runs ffprobe on the file at path and returns what it reports.
func FFprobe(t *testing.T, path string) Probe {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_streams", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var info struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			CodecType string `json:"codec_type"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	var p Probe
	for _, s := range info.Streams {
		p.Codecs = append(p.Codecs, s.CodecName)
		if s.CodecType == "video" {
			p.Width, p.Height = s.Width, s.Height
		}
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe packets %s: %v", path, err)
	}
	for _, line := range strings.Fields(string(out)) {
		v, err := strconv.ParseFloat(strings.TrimSuffix(line, ","), 64)
		if err == nil {
			p.VideoPTS = append(p.VideoPTS, v)
		}
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0", path).Output()
	if err == nil {
		p.AudioPkts = len(strings.Fields(string(out)))
	}
	return p
}

// Span returns max-min of ts.
func Span(ts []float64) float64 {
	if len(ts) == 0 {
		return 0
	}
	lo, hi := ts[0], ts[0]
	for _, v := range ts {
		lo, hi = min(lo, v), max(hi, v)
	}
	return hi - lo
}

// ProbeFloat runs ffprobe with args and the file, and parses its one
// number.
func ProbeFloat(t *testing.T, path string, args ...string) float64 {
	t.Helper()
	out, err := exec.Command("ffprobe", append(append([]string{"-v", "error"}, args...), "-of", "csv=p=0", path)...).Output()
	if err != nil {
		t.Fatalf("ffprobe %v %s: %v", args, path, err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(out)), ",")), 64)
	if err != nil {
		t.Fatalf("ffprobe %v %s: %q is not a number", args, path, out)
	}
	return v
}

// DecodedFrames decodes the video of path and counts its frames.
func DecodedFrames(t *testing.T, path string) int {
	t.Helper()
	return int(ProbeFloat(t, path, "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"))
}

// VideoSize is what ffprobe reads as the size of a live stream's video.
func VideoSize(url string) (int, int, error) {
	codec, w, h, err := ProbeVideo(url)
	if err == nil && codec != "h264" {
		err = fmt.Errorf("ffprobe %s: codec %s", url, codec)
	}
	return w, h, err
}
