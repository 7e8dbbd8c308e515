#!/usr/bin/env bash
# Installs what meshcast's test suite needs on a Debian machine, skipping what
# is already there: ffmpeg/ffprobe and GStreamer (publishers and players in the
# end-to-end tests) with gst-rtsp-server's Python bindings (an RTSP camera for
# the pulled sources' tests), redis-server (the Redis cluster registry's tests
# start their own) and memcached (so do the tests of the cache's second level),
# and nginx with its stream module and HAProxy (the tests of the configurations
# shipped in deploy/ run them in front of a cluster). Safe to run repeatedly;
# needs root (or sudo) only when something is missing.
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
# gst-rtsp-server through Python (an RTSP camera for the pulled sources'
# tests): the system's python3, which has the GObject bindings apt installs.
gst_rtsp='import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer'
/usr/bin/python3 -c "$gst_rtsp" >/dev/null 2>&1 || python3 -c "$gst_rtsp" >/dev/null 2>&1 ||
	need+=(python3 python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
# nginx and haproxy live in /usr/sbin, which may not be on a user's PATH.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp) # a push target of the restream tests
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus) # the metrics tests
[ -x /usr/bin/chromium ] || need+=(chromium) # the headless browser test of /events-demo

# The npm packages of package-lock.json: the Socket.IO client meshcast serves
# and the browser driver of the tests, into node_modules (npm ci).
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -e "$root/node_modules/.package-lock.json" ] || [ "$root/package-lock.json" -nt "$root/node_modules/.package-lock.json" ]; then
	if command -v npm >/dev/null 2>&1; then
		echo "install-test-deps: npm ci" >&2
		(cd "$root" && npm ci --no-audit --no-fund)
	else
		echo "install-test-deps: npm not found: install Node.js, then run npm ci in $root" >&2
	fi
fi

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
