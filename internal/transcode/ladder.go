// Package transcode runs ffmpeg to make an adaptive-bitrate ladder of a
// live stream: one ffmpeg process per source stream reads it from the local
// node and publishes every rendition back to the node as a stream of its
// own, APP/STREAM_NAME. A Supervisor starts, watches and restarts those
// processes.
package transcode

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/meshcast/meshcast/internal/streamname"
)

// Rendition is one rung of a ladder.
type Rendition struct {
	Name         string `yaml:"name" json:"name"`                   // "720p": the rendition's stream is APP/STREAM_720p
	Width        int    `yaml:"width" json:"width"`                 // 0: from Height, keeping the aspect ratio (ffmpeg scale=-2:H)
	Height       int    `yaml:"height" json:"height"`               // output height in pixels, even
	VideoBitrate string `yaml:"video_bitrate" json:"video_bitrate"` // ffmpeg syntax, "2500k"
	Preset       string `yaml:"preset" json:"preset"`               // x264 preset; "" means veryfast
	GOP          int    `yaml:"gop" json:"gop"`                     // longest keyframe interval in frames; 0 means 60
	AudioBitrate string `yaml:"audio_bitrate" json:"audio_bitrate"` // "" means 128k
}

// Defaults for the optional fields of a Rendition.
const (
	DefaultPreset       = "veryfast"
	DefaultGOP          = 60
	DefaultAudioBitrate = "128k"
)

// Limits checked by Validate.
const (
	MaxRenditionName = 32
	MinHeight        = 16
	MaxHeight        = 4320
	MinWidth         = 16
	MaxWidth         = 7680
	MaxGOP           = 1000
	maxBitrate       = 1_000_000_000 // bits/s; far above any ladder
)

// x264Presets are the presets libx264 accepts, fastest first.
var x264Presets = []string{
	"ultrafast", "superfast", "veryfast", "faster", "fast",
	"medium", "slow", "slower", "veryslow", "placebo",
}

// DefaultLadder is the ladder used when none is configured: 720p, 480p and
// 360p at 16:9, all veryfast with a 60-frame GOP and 128k audio.
func DefaultLadder() []Rendition {
	return []Rendition{
		{Name: "720p", Width: 1280, Height: 720, VideoBitrate: "2500k", Preset: DefaultPreset, GOP: DefaultGOP, AudioBitrate: DefaultAudioBitrate},
		{Name: "480p", Width: 854, Height: 480, VideoBitrate: "1000k", Preset: DefaultPreset, GOP: DefaultGOP, AudioBitrate: DefaultAudioBitrate},
		{Name: "360p", Width: 640, Height: 360, VideoBitrate: "500k", Preset: DefaultPreset, GOP: DefaultGOP, AudioBitrate: DefaultAudioBitrate},
	}
}

// Validate checks a rendition's settings before they reach ffmpeg's
// command line, so a bad ladder fails at configuration time, not in a
// restart loop.
func (r Rendition) Validate() error {
	if err := checkRenditionName(r.Name); err != nil {
		return err
	}
	if r.Height < MinHeight || r.Height > MaxHeight || r.Height%2 != 0 {
		return fmt.Errorf("transcode: rendition %s: height %d is not an even number in %d..%d", r.Name, r.Height, MinHeight, MaxHeight)
	}
	if r.Width != 0 && (r.Width < MinWidth || r.Width > MaxWidth || r.Width%2 != 0) {
		return fmt.Errorf("transcode: rendition %s: width %d is neither 0 nor an even number in %d..%d", r.Name, r.Width, MinWidth, MaxWidth)
	}
	if _, err := parseBitrate(r.VideoBitrate); err != nil {
		return fmt.Errorf("transcode: rendition %s: video bitrate: %w", r.Name, err)
	}
	if r.AudioBitrate != "" {
		if _, err := parseBitrate(r.AudioBitrate); err != nil {
			return fmt.Errorf("transcode: rendition %s: audio bitrate: %w", r.Name, err)
		}
	}
	if r.Preset != "" && !isPreset(r.Preset) {
		return fmt.Errorf("transcode: rendition %s: preset %q is not one of x264's %v", r.Name, r.Preset, x264Presets)
	}
	if r.GOP < 0 || r.GOP > MaxGOP {
		return fmt.Errorf("transcode: rendition %s: gop %d is not in 0..%d", r.Name, r.GOP, MaxGOP)
	}
	return nil
}

// ValidateLadder checks every rendition and that their names, hence their
// stream names, are unique.
func ValidateLadder(l []Rendition) error {
	seen := make(map[string]bool, len(l))
	for _, r := range l {
		if err := r.Validate(); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("transcode: rendition name %q is used twice", r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// Fit returns the renditions of ladder that do not upscale a source of
// srcWidth x srcHeight: those taller than the source are dropped (as are
// those with a fixed width wider than a known source width); one as tall
// as the source is kept. An unknown size (srcHeight 0) keeps all. The
// result may be empty, for a source smaller than every rung; it never
// shares memory with ladder.
func Fit(ladder []Rendition, srcWidth, srcHeight int) []Rendition {
	out := make([]Rendition, 0, len(ladder))
	for _, r := range ladder {
		if srcHeight > 0 && r.Height > srcHeight {
			continue
		}
		if srcHeight > 0 && srcWidth > 0 && r.Width > srcWidth {
			continue
		}
		out = append(out, r)
	}
	return out
}

// RenditionName is the name of the stream a rendition of source is
// published as: APP/STREAM_NAME. It fails when the result is not a valid
// stream name, for example too long.
func RenditionName(source streamname.Name, r Rendition) (streamname.Name, error) {
	if err := checkRenditionName(r.Name); err != nil {
		return "", err
	}
	if _, err := streamname.Parse(string(source)); err != nil {
		return "", fmt.Errorf("transcode: source: %w", err)
	}
	n, err := streamname.New(source.App(), source.Stream()+"_"+r.Name)
	if err != nil {
		return "", fmt.Errorf("transcode: rendition %s of %s: %w", r.Name, source, err)
	}
	return n, nil
}

func checkRenditionName(name string) error {
	if name == "" || len(name) > MaxRenditionName {
		return fmt.Errorf("transcode: rendition name %q is not 1 to %d characters", truncate(name), MaxRenditionName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("transcode: rendition name %q has a character outside [A-Za-z0-9_-]", truncate(name))
		}
	}
	return nil
}

func isPreset(p string) bool {
	for _, x := range x264Presets {
		if p == x {
			return true
		}
	}
	return false
}

// errBitrate describes the bitrates accepted.
var errBitrate = errors.New("want a whole number of bits/s with an optional k (1000) or M (1000000) suffix, such as 500k, 2M or 800000")

// parseBitrate reads the subset of ffmpeg's number syntax that ladders
// use and returns the mantissa and the suffix. Lower-case m is refused:
// to ffmpeg it means milli.
func parseBitrate(s string) (bitrate, error) {
	num, suffix, mult := s, "", int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			num, suffix, mult = s[:n-1], s[n-1:], 1000
		case 'M':
			num, suffix, mult = s[:n-1], s[n-1:], 1_000_000
		}
	}
	if num == "" || num[0] < '1' || num[0] > '9' || len(num) > 10 {
		return bitrate{}, fmt.Errorf("%q: %w", truncate(s), errBitrate)
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v*mult > maxBitrate {
		return bitrate{}, fmt.Errorf("%q: %w", truncate(s), errBitrate)
	}
	return bitrate{n: v, suffix: suffix}, nil
}

// bitrate is a parsed bitrate: n times the unit named by suffix.
type bitrate struct {
	n      int64
	suffix string
}

func (b bitrate) String() string { return strconv.FormatInt(b.n, 10) + b.suffix }

func truncate(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
