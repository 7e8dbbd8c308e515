#!/usr/bin/env bash
# bench/compare-hls.sh: meshcast's live HLS against nginx serving the same
# stream as static files, side by side on one machine in one run. nginx
# serves a copy that bench/hlsmirror makes continuously as meshcast writes
# the stream (the same bytes under the same names, a poll behind), so both
# serve the same content with the same live timing to the same players.
# The server measured runs pinned to SERVER_CPU; the load (meshcast bench
# or bench/httpload) runs on LOAD_CPU, and so do the meshcast origin and
# the mirror that feed nginx.
#
# Two parts:
#  1. serving: one live segment, then the media playlist, fetched over and
#     over on CONNS keep-alive connections (bench/httpload): requests and
#     megabytes per second, and the server's CPU per request and per MB.
#     The stream is SEGMENT_SOURCE (2 Mbit/s), published by ffmpeg.
#  2. players: steps of `meshcast bench` HLS players (hls.js's behaviour:
#     3 segments behind the live edge, every segment of the video and
#     audio playlists) of a 600 kbit/s stream: CPU per viewer, requests,
#     stalls, distance behind live. meshcast-llhls is meshcast with
#     --hls-low-latency and LL-HLS players (blocking playlist reloads,
#     every part); nginx cannot serve LL-HLS.
#
#   bench/compare-hls.sh                            # everything
#   PARTS=serving bench/compare-hls.sh              # part 1 only
#   STEPS=200 HOLD=10s PARTS=players bench/compare-hls.sh
#
# Settings (environment): PARTS ("serving players"), STEPS
# (500,1000,2000,3000), WARMUP (10s), HOLD (20s), CONNS (100), DURATION
# (10s, part 1), OUT (bench/out/hls), SERVER_CPU (0), LOAD_CPU (1),
# SERVERS ("meshcast nginx-static meshcast-llhls").
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
PARTS=${PARTS:-"serving players"}
STEPS=${STEPS:-500,1000,2000,3000}
WARMUP=${WARMUP:-10s}
HOLD=${HOLD:-20s}
CONNS=${CONNS:-100}
DURATION=${DURATION:-10s}
OUT=${OUT:-bench/out/hls}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SERVERS=${SERVERS:-"meshcast nginx-static meshcast-llhls"}
RTMP_PORT=${RTMP_PORT:-19360}
HTTP_PORT=${HTTP_PORT:-18100}
NGINX_PORT=${NGINX_PORT:-18101}
HOST=127.0.0.1

bash bench/install-deps.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "compare-hls: building" >&2
go build -o "$OUT/meshcast" ./cmd/meshcast
go build -o "$OUT/hlsmirror" ./bench/hlsmirror
go build -o "$OUT/httpload" ./bench/httpload
MESHCAST="$OUT/meshcast"

SOURCE="$OUT/source-600k.flv"
make_source "$SOURCE" 640x360 530 64
SEGMENT_SOURCE="$OUT/source-2m.flv"
if [[ " $PARTS " == *" serving "* ]]; then
	make_source "$SEGMENT_SOURCE" 1280x720 1900 96
fi

{
	machine_lines
	echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "meshcast: $("$MESHCAST" version 2>/dev/null | head -1)"
	echo "server core: $SERVER_CPU, load core: $LOAD_CPU; steps $STEPS; warmup $WARMUP, hold $HOLD; serving: $CONNS connections, $DURATION"
	echo "command: PARTS=\"$PARTS\" STEPS=$STEPS WARMUP=$WARMUP HOLD=$HOLD SERVERS=\"$SERVERS\" bench/compare-hls.sh"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	pids=()
}
trap cleanup EXIT

wait_http() { # URL: until it answers 200
	for _ in $(seq 300); do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; then
			return 0
		fi
		sleep 0.1
	done
	echo "compare-hls: $1 never answered 200" >&2
	return 1
}

start_meshcast() { # CPU extra-flags...
	local cpu=$1
	shift
	taskset -c "$cpu" "$MESHCAST" serve --rtmp-addr "$HOST:$RTMP_PORT" --http-addr "$HOST:$HTTP_PORT" \
		--log-level warn --max-connections-per-ip 0 "$@" >>"$OUT/meshcast.log" 2>&1 &
	meshcast_pid=$!
	pids+=("$meshcast_pid")
	wait_http "http://$HOST:$HTTP_PORT/healthz"
}

start_nginx() { # DIR: serve DIR at /live/STREAM/ on NGINX_PORT
	local conf="$OUT/nginx"
	mkdir -p "$conf/logs"
	cat >"$conf/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $conf/nginx.pid;
error_log $conf/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    types {
        application/vnd.apple.mpegurl m3u8;
        video/mp4 mp4;
        video/mp2t ts;
    }
    server {
        listen $HOST:$NGINX_PORT;
        location /live/ {
            alias $1/;
            location ~ \.m3u8\$ { add_header Cache-Control no-cache; }
        }
    }
}
EOF
	taskset -c "$SERVER_CPU" nginx -p "$conf" -c "$conf/nginx.conf" >>"$OUT/nginx.log" 2>&1 &
	local master=$!
	pids+=("$master")
	for _ in $(seq 50); do
		nginx_pid=$(pgrep -P "$master" | head -1 || true)
		[ -n "$nginx_pid" ] && return 0
		sleep 0.1
	done
	echo "compare-hls: no nginx worker" >&2
	return 1
}

start_mirror() { # STREAM DIR
	rm -rf "$2"
	mkdir -p "$2"
	taskset -c "$LOAD_CPU" "$OUT/hlsmirror" -src "http://$HOST:$HTTP_PORT/live/$1/index.m3u8" -dir "$2/$1" \
		>>"$OUT/mirror.log" 2>&1 &
	pids+=("$!")
}

video_playlist() { # BASE: the first media playlist index.m3u8 lists
	local base=$1
	local media
	media=$(curl -s "$base/index.m3u8" | grep -v '^#' | grep -m1 m3u8)
	echo "$base/$media"
}

if [[ " $PARTS " == *" serving "* ]]; then
	SERVING="$OUT/serving.jsonl"
	: >"$SERVING"
	for server in meshcast nginx-static; do
		echo "compare-hls: serving, $server" >&2
		cpu=$SERVER_CPU
		[ "$server" = nginx-static ] && cpu=$LOAD_CPU
		start_meshcast "$cpu"
		taskset -c "$LOAD_CPU" ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 \
			-i "$SEGMENT_SOURCE" -c copy -f flv "rtmp://$HOST:$RTMP_PORT/live/seg" >>"$OUT/ffmpeg.log" 2>&1 &
		pids+=("$!")
		wait_http "http://$HOST:$HTTP_PORT/live/seg/index.m3u8"
		base="http://$HOST:$HTTP_PORT/live/seg"
		pid=$meshcast_pid
		if [ "$server" = nginx-static ]; then
			start_mirror seg "$OUT/www"
			start_nginx "$OUT/www"
			base="http://$HOST:$NGINX_PORT/live/seg"
			pid=$nginx_pid
		fi
		sleep 6 # three segments in the playlist
		wait_http "$base/index.m3u8"
		playlist=$(video_playlist "$base")
		taskset -c "$LOAD_CPU" "$OUT/httpload" -url "$playlist" -live-segment -conns "$CONNS" -duration "$DURATION" \
			-pid "$pid" -label "server=$server,file=segment" | tee -a "$SERVING"
		taskset -c "$LOAD_CPU" "$OUT/httpload" -url "$playlist" -conns "$CONNS" -duration "$DURATION" \
			-pid "$pid" -label "server=$server,file=playlist" | tee -a "$SERVING"
		cleanup
		sleep 2
	done
fi

if [[ " $PARTS " == *" players "* ]]; then
	RESULTS="$OUT/results.jsonl"
	: >"$RESULTS"
	for server in $SERVERS; do
		echo "compare-hls: players, $server" >&2
		protocol=hls
		case $server in
		meshcast)
			start_meshcast "$SERVER_CPU"
			play="http://$HOST:$HTTP_PORT/live/bench/index.m3u8"
			pid=$meshcast_pid
			;;
		meshcast-llhls)
			start_meshcast "$SERVER_CPU" --hls-low-latency
			play="http://$HOST:$HTTP_PORT/live/bench/index.m3u8"
			pid=$meshcast_pid
			protocol=llhls
			;;
		nginx-static)
			start_meshcast "$LOAD_CPU"
			start_mirror bench "$OUT/www"
			start_nginx "$OUT/www"
			play="http://$HOST:$NGINX_PORT/live/bench/index.m3u8"
			pid=$nginx_pid
			;;
		*)
			echo "compare-hls: unknown server $server" >&2
			exit 2
			;;
		esac
		taskset -c "$LOAD_CPU" "$MESHCAST" bench --input "$SOURCE" \
			--publish "rtmp://$HOST:$RTMP_PORT/live/bench" --play "$play" --protocol "$protocol" \
			--viewers "$STEPS" --warmup "$WARMUP" --hold "$HOLD" \
			--pid "$pid" --label "server=$server" --out "$RESULTS"
		cleanup
		sleep 2
	done
	go run ./bench/report --in "$RESULTS" --machine "$OUT/machine.txt" \
		--md "$OUT/results.md" --data "$OUT/plot.dat" --servers "$SERVERS" --ref nginx-static
	if command -v gnuplot >/dev/null; then
		gnuplot -e "datafile='$OUT/plot.dat'; outfile='$OUT/compare.png'; title='meshcast HLS vs nginx serving a live copy: players of a 600 kbit/s stream, server on one core'" bench/plot.gp || echo "no plot: gnuplot failed (a log scale needs a latency above 0 ms)" >&2
		echo "compare-hls: plot in $OUT/compare.png" >&2
	fi
	cat "$OUT/results.md"
fi
if [ -s "$OUT/serving.jsonl" ]; then
	"$OUT/httpload" -report "$OUT/serving.jsonl" | tee "$OUT/serving.md"
fi
