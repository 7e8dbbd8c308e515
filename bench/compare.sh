#!/usr/bin/env bash
# bench/compare.sh: meshcast and nginx-rtmp side by side, on one machine, in
# one run. Each server in turn runs pinned to one core (SERVER_CPU) and
# `meshcast bench` loads it from another (LOAD_CPU): one 2 Mbps H.264/AAC
# publisher and steps of RTMP players. Results go to OUT (JSON lines, a
# Markdown table and a PNG plot).
#
#   bench/compare.sh                      # the full ramp
#   STEPS=100,500 HOLD=10s bench/compare.sh   # a quick look
#
# Settings (environment): STEPS (100,500,1000,2000,3000), WARMUP (5s),
# HOLD (20s), OUT (bench/out), SERVER_CPU (0), LOAD_CPU (1),
# SERVERS ("meshcast meshcast-lowlatency meshcast-flv nginx-rtmp";
# meshcast-flv is meshcast's default mode played over HTTP-FLV).
set -euo pipefail

cd "$(dirname "$0")/.."
STEPS=${STEPS:-100,500,1000,2000,3000}
WARMUP=${WARMUP:-5s}
HOLD=${HOLD:-20s}
OUT=${OUT:-bench/out}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SERVERS=${SERVERS:-"meshcast meshcast-lowlatency meshcast-flv nginx-rtmp"}
RTMP_PORT=${RTMP_PORT:-19350}
HTTP_PORT=${HTTP_PORT:-18090}

bash bench/install-deps.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# Enough descriptors for every player's socket on both ends.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "compare: building meshcast" >&2
go build -o "$OUT/meshcast" ./cmd/meshcast
MESHCAST="$OUT/meshcast"

SOURCE="$OUT/source.flv"
if [ ! -s "$SOURCE" ]; then
	echo "compare: making a 2 Mbps 720p30 H.264/AAC source" >&2
	ffmpeg -hide_banner -loglevel error -y \
		-f lavfi -i testsrc2=size=1280x720:rate=30 \
		-f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
		-c:v libx264 -preset veryfast -b:v 1900k -maxrate 1900k -bufsize 1900k \
		-g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p \
		-c:a aac -b:a 96k -f flv "$SOURCE"
fi

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores online)"
	echo "kernel: $(uname -r)"
	echo "go: $(go version)"
	echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), libnginx-mod-rtmp $(dpkg-query -W -f='${Version}' libnginx-mod-rtmp 2>/dev/null || echo '?')"
	echo "meshcast: $("$MESHCAST" version 2>/dev/null | head -1)"
	echo "server core: $SERVER_CPU, load core: $LOAD_CPU; steps $STEPS; warmup $WARMUP, hold $HOLD"
	echo "command: STEPS=$STEPS WARMUP=$WARMUP HOLD=$HOLD bench/compare.sh"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

server_pid=""
server_kill=""
cleanup() {
	if [ -n "$server_kill" ]; then
		kill "$server_kill" 2>/dev/null || true
		wait "$server_kill" 2>/dev/null || true
	fi
	server_kill=""
}
trap cleanup EXIT

wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "compare: nothing listens on port $1" >&2
	return 1
}

start_meshcast() { # extra flags...
	taskset -c "$SERVER_CPU" "$MESHCAST" serve --rtmp-addr "127.0.0.1:$RTMP_PORT" \
		--http-addr "127.0.0.1:$HTTP_PORT" --log-level warn \
		--max-connections-per-ip 0 "$@" >"$OUT/server.log" 2>&1 &
	server_kill=$!
	server_pid=$server_kill
	wait_port "$RTMP_PORT"
}

start_nginx() {
	local dir="$OUT/nginx"
	mkdir -p "$dir/logs"
	cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 16384; }
rtmp {
    server {
        listen 127.0.0.1:$RTMP_PORT;
        chunk_size 4096;
        application live { live on; }
    }
}
EOF
	taskset -c "$SERVER_CPU" nginx -p "$dir" -c "$dir/nginx.conf" >"$OUT/server.log" 2>&1 &
	server_kill=$!
	wait_port "$RTMP_PORT"
	# The worker serves the connections: measure it, not the master.
	server_pid=$(pgrep -P "$server_kill" | head -1)
	[ -n "$server_pid" ] || { echo "compare: no nginx worker" >&2; return 1; }
}

for server in $SERVERS; do
	echo "compare: $server" >&2
	play="rtmp://127.0.0.1:$RTMP_PORT/live/bench"
	case $server in
	meshcast) start_meshcast ;;
	meshcast-lowlatency) start_meshcast --low-latency ;;
	meshcast-flv)
		start_meshcast
		play="http://127.0.0.1:$HTTP_PORT/live/bench.flv"
		;;
	nginx-rtmp) start_nginx ;;
	*) echo "compare: unknown server $server" >&2; exit 2 ;;
	esac
	taskset -c "$LOAD_CPU" "$MESHCAST" bench --input "$SOURCE" \
		--publish "rtmp://127.0.0.1:$RTMP_PORT/live/bench" --play "$play" \
		--viewers "$STEPS" --warmup "$WARMUP" --hold "$HOLD" \
		--pid "$server_pid" --label "server=$server" --out "$RESULTS"
	cleanup
	sleep 2 # let the closed connections' sockets go
done

go run ./bench/report --in "$RESULTS" --machine "$OUT/machine.txt" \
	--md "$OUT/results.md" --data "$OUT/plot.dat" --servers "$SERVERS"
if command -v gnuplot >/dev/null; then
	gnuplot -e "datafile='$OUT/plot.dat'; outfile='$OUT/compare.png'" bench/plot.gp
	echo "compare: plot in $OUT/compare.png" >&2
fi
cat "$OUT/results.md"
