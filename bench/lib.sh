# bench/lib.sh: what the benchmark scripts share. Sourced, not run.

# make_source FILE SIZE VIDEO_KBPS AUDIO_KBPS [x264 flags...]: writes FILE,
# unless it exists, a 60 s H.264/AAC FLV source of SIZE at 30 fps with a
# keyframe every 2 s (testsrc2 and a 440 Hz tone), the video at a constant
# VIDEO_KBPS.
make_source() {
	local file=$1 size=$2 video=$3 audio=$4
	shift 4
	[ -s "$file" ] && return 0
	mkdir -p "$(dirname "$file")"
	echo "bench: making $(basename "$file"): H.264 $size 30 fps ${video}k $*, AAC ${audio}k" >&2
	ffmpeg -hide_banner -loglevel error -y \
		-f lavfi -i "testsrc2=size=$size:rate=30" \
		-f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
		-c:v libx264 -preset veryfast "$@" -b:v "${video}k" -maxrate "${video}k" -bufsize "${video}k" \
		-g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p \
		-c:a aac -b:a "${audio}k" -f flv "$file"
}

# machine_lines: the lines of a results' machine.txt that describe the
# machine: the date, the CPU, the kernel and Go.
machine_lines() {
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores online)"
	echo "kernel: $(uname -r)"
	echo "go: $(go version)"
}
