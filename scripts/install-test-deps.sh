#!/usr/bin/env bash
# Installs what meshcast's test suite needs on a Debian machine, skipping what
# is already there: ffmpeg/ffprobe and GStreamer (publishers and players in the
# end-to-end tests), and redis-server (the Redis cluster registry's tests start
# their own). Safe to run repeatedly; needs root (or sudo) only when
# something is missing.
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
if ! command -v gst-launch-1.0 >/dev/null 2>&1 ||
	! gst-inspect-1.0 x264enc >/dev/null 2>&1 ||
	! gst-inspect-1.0 rtmp2sink >/dev/null 2>&1 ||
	! gst-inspect-1.0 flvmux >/dev/null 2>&1 ||
	! { gst-inspect-1.0 avenc_aac >/dev/null 2>&1 || gst-inspect-1.0 voaacenc >/dev/null 2>&1; }; then
	need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
		gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
fi
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo="sudo"
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
