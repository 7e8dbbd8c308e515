package transcode

import (
	"slices"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	outputs := []Output{
		{Rendition: DefaultLadder()[0], URL: "rtmp://127.0.0.1:1935/live/cam_720p"},
		{Rendition: Rendition{Name: "240p", Height: 240, VideoBitrate: "2M"}, URL: "rtmp://127.0.0.1:1935/live/cam_240p"},
	}
	got := Args("rtmp://127.0.0.1:1935/live/cam", outputs)

	global := []string{
		"-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-progress", "pipe:1", "-stats_period", "1", "-rw_timeout", "15000000",
		"-copyts", "-i", "rtmp://127.0.0.1:1935/live/cam",
	}
	out720 := []string{
		"-map", "0:v:0", "-map", "0:a:0?",
		"-c:v", "libx264", "-preset", "veryfast",
		"-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
		"-vf", "scale=1280:720", "-pix_fmt", "yuv420p",
		"-g", "60", "-sc_threshold", "0", "-force_key_frames", "source",
		"-bf", "0", "-enc_time_base:v", "-1",
		"-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-af", "atrim=start=0.022",
		"-f", "flv", "rtmp://127.0.0.1:1935/live/cam_720p",
	}
	// The second rendition leaves width, preset, GOP and audio bitrate to
	// their defaults.
	out240 := []string{
		"-map", "0:v:0", "-map", "0:a:0?",
		"-c:v", "libx264", "-preset", "veryfast",
		"-b:v", "2M", "-maxrate", "2M", "-bufsize", "4M",
		"-vf", "scale=-2:240", "-pix_fmt", "yuv420p",
		"-g", "60", "-sc_threshold", "0", "-force_key_frames", "source",
		"-bf", "0", "-enc_time_base:v", "-1",
		"-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-af", "atrim=start=0.022",
		"-f", "flv", "rtmp://127.0.0.1:1935/live/cam_240p",
	}
	want := slices.Concat(global, out720, out240)
	if !slices.Equal(got, want) {
		t.Fatalf("Args:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(want, " "))
	}

	// Options of a rendition follow its preset, GOP and audio bitrate.
	custom := Rendition{Name: "x", Width: 320, Height: 180, VideoBitrate: "300000", Preset: "ultrafast", GOP: 48, AudioBitrate: "64k"}
	got = Args("in.flv", []Output{{Rendition: custom, URL: "out.flv"}})
	for _, pair := range [][2]string{
		{"-preset", "ultrafast"}, {"-b:v", "300000"}, {"-maxrate", "300000"}, {"-bufsize", "600000"},
		{"-vf", "scale=320:180"}, {"-g", "48"}, {"-b:a", "64k"},
	} {
		i := slices.Index(got, pair[0])
		if i < 0 || i+1 >= len(got) || got[i+1] != pair[1] {
			t.Errorf("Args(custom) has no %s %s: %s", pair[0], pair[1], strings.Join(got, " "))
		}
	}
}

func TestDoubleBitrate(t *testing.T) {
	for in, want := range map[string]string{
		"2500k":  "5000k",
		"500k":   "1000k",
		"128K":   "256K",
		"2M":     "4M",
		"800000": "1600000",
		"oops":   "oops", // left for ffmpeg to refuse; Validate refuses it first
	} {
		if got := doubleBitrate(in); got != want {
			t.Errorf("doubleBitrate(%q) = %q, want %q", in, got, want)
		}
	}
}
