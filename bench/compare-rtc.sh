#!/usr/bin/env bash
# bench/compare-rtc.sh: WebRTC playback (WHEP) of meshcast and MediaMTX
# side by side, on one machine in one run. Each server in turn runs pinned
# to SERVER_CPU, `meshcast bench` on LOAD_CPU publishes a 600 kbit/s
# H.264/AAC stream over RTMP and plays it back with steps of WHEP viewers
# (pion; RTP and RTCP received, not decoded; receiver reports and NACKs
# sent as a browser does): packets lost, per-frame latency, time to first
# keyframe, and the server's CPU and memory per viewer.
#
# MediaMTX is built from its source (bench/build-mediamtx.sh SRC OUT) and
# given here by its binary's path; without MEDIAMTX it is left out.
#
#   MEDIAMTX=/tmp/mediamtx bench/compare-rtc.sh
#   STEPS=100,500 HOLD=10s SERVERS=meshcast bench/compare-rtc.sh
#
# Settings (environment): STEPS (250,500,1000,2000), WARMUP (5s), HOLD
# (20s), OUT (bench/out/rtc), SERVER_CPU (0), LOAD_CPU (1), SERVERS
# ("meshcast mediamtx"; mediamtx only with MEDIAMTX), MEDIAMTX.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
STEPS=${STEPS:-250,500,1000,2000}
WARMUP=${WARMUP:-5s}
HOLD=${HOLD:-20s}
OUT=${OUT:-bench/out/rtc}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
MEDIAMTX=${MEDIAMTX:-}
SERVERS=${SERVERS:-"meshcast${MEDIAMTX:+ mediamtx}"}
RTMP_PORT=${RTMP_PORT:-19370}
HTTP_PORT=${HTTP_PORT:-18110}
UDP_PORT=${UDP_PORT:-18189}
HOST=127.0.0.1

bash bench/install-deps.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "compare-rtc: building meshcast" >&2
go build -o "$OUT/meshcast" ./cmd/meshcast
MESHCAST="$OUT/meshcast"

# Constrained baseline: no B-frames, as WebRTC players expect.
SOURCE="$OUT/source-600k-baseline.flv"
make_source "$SOURCE" 640x360 530 64 -profile:v baseline

{
	machine_lines
	echo "meshcast: $("$MESHCAST" version 2>/dev/null | head -1)"
	[ -n "$MEDIAMTX" ] && echo "mediamtx: $("$MEDIAMTX" --version 2>/dev/null | head -1) ($MEDIAMTX)"
	echo "server core: $SERVER_CPU, load core: $LOAD_CPU; steps $STEPS; warmup $WARMUP, hold $HOLD"
	echo "command: STEPS=$STEPS WARMUP=$WARMUP HOLD=$HOLD SERVERS=\"$SERVERS\" MEDIAMTX=${MEDIAMTX:-} bench/compare-rtc.sh"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

server_pid=""
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	server_pid=""
}
trap cleanup EXIT

wait_port() {
	for _ in $(seq 100); do
		if bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "compare-rtc: nothing listens on port $1" >&2
	return 1
}

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for server in $SERVERS; do
	echo "compare-rtc: $server" >&2
	case $server in
	meshcast)
		# Every session's media on one UDP port, as MediaMTX does.
		taskset -c "$SERVER_CPU" "$MESHCAST" serve --rtmp-addr "$HOST:$RTMP_PORT" --http-addr "$HOST:$HTTP_PORT" \
			--webrtc-udp-addr "$HOST:$UDP_PORT" --log-level warn --max-connections-per-ip 0 >"$OUT/server.log" 2>&1 &
		server_pid=$!
		;;
	mediamtx)
		[ -n "$MEDIAMTX" ] || { echo "compare-rtc: mediamtx needs MEDIAMTX=/path/to/mediamtx" >&2; exit 2; }
		cat >"$OUT/mediamtx.yml" <<YML
logLevel: warn
rtsp: false
hls: false
srt: false
moq: false
rtmpAddress: $HOST:$RTMP_PORT
webrtcAddress: $HOST:$HTTP_PORT
webrtcLocalUDPAddress: $HOST:$UDP_PORT
webrtcIPsFromInterfaces: false
webrtcAdditionalHosts: [$HOST]
paths:
  all_others:
YML
		(cd "$OUT" && exec taskset -c "$SERVER_CPU" "$MEDIAMTX" "$OUT/mediamtx.yml") >"$OUT/server.log" 2>&1 &
		server_pid=$!
		;;
	*)
		echo "compare-rtc: unknown server $server" >&2
		exit 2
		;;
	esac
	wait_port "$RTMP_PORT"
	wait_port "$HTTP_PORT"
	taskset -c "$LOAD_CPU" "$MESHCAST" bench --input "$SOURCE" \
		--publish "rtmp://$HOST:$RTMP_PORT/live/bench" --play "http://$HOST:$HTTP_PORT/live/bench/whep" \
		--protocol whep --viewers "$STEPS" --warmup "$WARMUP" --hold "$HOLD" \
		--pid "$server_pid" --label "server=$server" --out "$RESULTS"
	cleanup
	sleep 2
done

go run ./bench/report --in "$RESULTS" --machine "$OUT/machine.txt" \
	--md "$OUT/results.md" --data "$OUT/plot.dat" --servers "$SERVERS" --ref mediamtx
if command -v gnuplot >/dev/null; then
	gnuplot -e "datafile='$OUT/plot.dat'; outfile='$OUT/compare.png'; title='WHEP: meshcast vs MediaMTX, viewers of a 600 kbit/s stream, server on one core'" bench/plot.gp || echo "no plot: gnuplot failed (a log scale needs a latency above 0 ms)" >&2
	echo "compare-rtc: plot in $OUT/compare.png" >&2
fi
cat "$OUT/results.md"
