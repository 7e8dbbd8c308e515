package transcode

import "strconv"

// Output is where one rendition goes.
type Output struct {
	Rendition
	URL string // where ffmpeg publishes the rendition as FLV: rtmp://..., or a file path
}

// audioTrim drops the audio before this input time, in seconds. The AAC
// encoder puts 1024 samples of priming ahead of the first input sample,
// 21.33 ms at the 48 kHz of every output (-ar 48000): audio that starts
// at 0, as at the start of a stream published from zero, would be
// encoded from -21 ms, and the FLV muxer, which cannot store a negative
// time, would then shift every packet of the output by 21 ms
// (-avoid_negative_ts make_non_negative), moving the rendition's
// keyframes off the source's. Dropping the first 22 ms of audio keeps the
// output at or after zero; past the start of a stream it drops nothing.
const audioTrim = "0.022"

// Args returns ffmpeg's arguments (without "ffmpeg") for reading input and
// writing every output, in one process so the source is read and decoded
// once.
//
// The renditions keep the source's timestamps (-copyts) and keyframes
// (-force_key_frames source, no scene-cut keyframes) so HLS segments align
// across the renditions and the source; GOP is only the longest interval
// between keyframes, for sources with long ones. Three options beyond
// these keep that alignment exact, as the tests check with ffprobe:
//   - -enc_time_base:v -1 encodes in the input's time base (1/1000 for
//     FLV). By default the encoder's is 1/frame rate, which rounds every
//     timestamp of a 29.97 fps source by up to a millisecond.
//   - -bf 0: with B-frames, x264's first decoding time is two frames ahead
//     of the first presentation time, so an output starting near zero
//     would be negative and shifted as a whole by the FLV muxer (see
//     audioTrim) whenever the source has no B-frames of its own, as from
//     many phones and hardware encoders. This costs some compression
//     (veryfast uses 3 B-frames), a price paid for segments that align
//     from the first one whatever the publisher sends.
//   - -af atrim, see audioTrim.
//
// -y lets a restarted job overwrite its earlier output when URLs are file
// paths (ffmpeg refuses to without it under -nostdin); it does nothing for
// rtmp:// URLs.
//
// Args trusts its outputs: check them with ValidateLadder first.
func Args(input string, outputs []Output) []string {
	args := []string{
		"-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-progress", "pipe:1", "-stats_period", "1",
		"-rw_timeout", "15000000", // microseconds: give up on a silent input after 15 s
		"-copyts",
		"-i", input,
	}
	for _, o := range outputs {
		r := o.Rendition
		preset, gop, ab := r.Preset, r.GOP, r.AudioBitrate
		if preset == "" {
			preset = DefaultPreset
		}
		if gop == 0 {
			gop = DefaultGOP
		}
		if ab == "" {
			ab = DefaultAudioBitrate
		}
		w := r.Width
		if w == 0 {
			w = -2 // from the height, keeping the aspect ratio, even for x264
		}
		args = append(args,
			"-map", "0:v:0", "-map", "0:a:0?",
			"-c:v", "libx264", "-preset", preset,
			"-b:v", r.VideoBitrate, "-maxrate", r.VideoBitrate, "-bufsize", doubleBitrate(r.VideoBitrate),
			"-vf", "scale="+strconv.Itoa(w)+":"+strconv.Itoa(r.Height),
			"-pix_fmt", "yuv420p",
			"-g", strconv.Itoa(gop), "-sc_threshold", "0", "-force_key_frames", "source",
			"-bf", "0", "-enc_time_base:v", "-1",
			"-c:a", "aac", "-b:a", ab, "-ar", "48000",
			"-af", "atrim=start="+audioTrim,
			"-f", "flv", o.URL,
		)
	}
	return args
}

// doubleBitrate returns twice the bitrate s in the same unit: the VBV
// buffer of two seconds at the maximum rate. A bitrate it cannot read is
// returned as is, for ffmpeg to refuse.
func doubleBitrate(s string) string {
	b, err := parseBitrate(s)
	if err != nil {
		return s
	}
	b.n *= 2
	return b.String()
}
