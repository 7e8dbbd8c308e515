#!/usr/bin/env bash
# bench/compare.sh: meshcast and nginx-rtmp side by side, on one machine, in
# one run. Each server in turn runs pinned to one core (SERVER_CPU) and
# `meshcast bench` loads it from another (LOAD_CPU): one 2 Mbps H.264/AAC
# publisher and steps of RTMP players. Results go to OUT (JSON lines, a
# Markdown table and a PNG plot).
#
#   bench/compare.sh                      # the full ramp
#   STEPS=100,500 HOLD=10s bench/compare.sh   # a quick look
#   WAN_DELAY=25ms STEPS=20,100 OUT=bench/out/wan \
#     SERVERS="meshcast-lowlatency meshcast-lowlatency-nodelay nginx-rtmp" \
#     bench/compare.sh                    # over a 50 ms round trip
#
# Settings (environment): STEPS (100,500,1000,2000,3000), WARMUP (5s),
# HOLD (20s), OUT (bench/out), SERVER_CPU (0), LOAD_CPU (1),
# SERVERS ("meshcast meshcast-lowlatency meshcast-flv nginx-rtmp";
# meshcast-flv is meshcast's default mode played over HTTP-FLV,
# meshcast-lowlatency-nodelay low-latency mode with --tcp-nodelay on),
# WAN_DELAY (unset: loopback; else servers and load run in two network
# namespaces joined by bench/wan, which delays each packet this much each
# way; needs root). Latency over a WAN includes the path's round trip.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
STEPS=${STEPS:-100,500,1000,2000,3000}
WARMUP=${WARMUP:-5s}
HOLD=${HOLD:-20s}
OUT=${OUT:-bench/out}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SERVERS=${SERVERS:-"meshcast meshcast-lowlatency meshcast-flv nginx-rtmp"}
RTMP_PORT=${RTMP_PORT:-19350}
HTTP_PORT=${HTTP_PORT:-18090}
WAN_DELAY=${WAN_DELAY:-}
HOST=127.0.0.1
IN_SERVER=() # the command prefix that runs a server on its side of the path
IN_LOAD=()

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
make_source "$SOURCE" 1280x720 1900 96

{
	machine_lines
	echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), libnginx-mod-rtmp $(dpkg-query -W -f='${Version}' libnginx-mod-rtmp 2>/dev/null || echo '?')"
	echo "meshcast: $("$MESHCAST" version 2>/dev/null | head -1)"
	echo "server core: $SERVER_CPU, load core: $LOAD_CPU; steps $STEPS; warmup $WARMUP, hold $HOLD"
	if [ -n "$WAN_DELAY" ]; then
		echo "path: bench/wan, $WAN_DELAY each way (latency includes the round trip)"
		echo "command: WAN_DELAY=$WAN_DELAY STEPS=$STEPS WARMUP=$WARMUP HOLD=$HOLD SERVERS=\"$SERVERS\" bench/compare.sh"
	else
		echo "command: STEPS=$STEPS WARMUP=$WARMUP HOLD=$HOLD bench/compare.sh"
	fi
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

server_pid=""
server_kill=""
wan_pid=""
cleanup() {
	if [ -n "$server_kill" ]; then
		kill "$server_kill" 2>/dev/null || true
		wait "$server_kill" 2>/dev/null || true
	fi
	server_kill=""
}
trap 'cleanup; if [ -n "$wan_pid" ]; then kill "$wan_pid"; wait "$wan_pid" || true; fi' EXIT

if [ -n "$WAN_DELAY" ]; then
	go build -o "$OUT/wan" ./bench/wan
	"$OUT/wan" -delay "$WAN_DELAY" >"$OUT/wan.log" 2>&1 &
	wan_pid=$!
	for _ in $(seq 100); do
		grep -q '^ready' "$OUT/wan.log" && break
		kill -0 "$wan_pid" 2>/dev/null || { cat "$OUT/wan.log" >&2; exit 1; }
		sleep 0.1
	done
	HOST=10.199.0.1
	IN_SERVER=(ip netns exec mcwan-srv)
	IN_LOAD=(ip netns exec mcwan-load)
fi

wait_port() {
	for _ in $(seq 100); do
		if "${IN_LOAD[@]}" bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "compare: nothing listens on port $1" >&2
	return 1
}

start_meshcast() { # extra flags...
	# Over a WAN the publisher is not on loopback: it publishes openly.
	"${IN_SERVER[@]}" taskset -c "$SERVER_CPU" "$MESHCAST" serve --rtmp-addr "$HOST:$RTMP_PORT" \
		--http-addr "$HOST:$HTTP_PORT" --log-level warn \
		--max-connections-per-ip 0 ${WAN_DELAY:+--publish-auth open} "$@" >"$OUT/server.log" 2>&1 &
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
        listen $HOST:$RTMP_PORT;
        chunk_size 4096;
        application live { live on; }
    }
}
EOF
	"${IN_SERVER[@]}" taskset -c "$SERVER_CPU" nginx -p "$dir" -c "$dir/nginx.conf" >"$OUT/server.log" 2>&1 &
	server_kill=$!
	wait_port "$RTMP_PORT"
	# The worker serves the connections: measure it, not the master.
	server_pid=$(pgrep -P "$server_kill" | head -1)
	[ -n "$server_pid" ] || { echo "compare: no nginx worker" >&2; return 1; }
}

for server in $SERVERS; do
	echo "compare: $server" >&2
	play="rtmp://$HOST:$RTMP_PORT/live/bench"
	case $server in
	meshcast) start_meshcast ;;
	meshcast-lowlatency) start_meshcast --low-latency ;;
	meshcast-lowlatency-nodelay) start_meshcast --low-latency --tcp-nodelay on ;;
	meshcast-flv)
		start_meshcast
		play="http://$HOST:$HTTP_PORT/live/bench.flv"
		;;
	nginx-rtmp) start_nginx ;;
	*) echo "compare: unknown server $server" >&2; exit 2 ;;
	esac
	"${IN_LOAD[@]}" taskset -c "$LOAD_CPU" "$MESHCAST" bench --input "$SOURCE" \
		--publish "rtmp://$HOST:$RTMP_PORT/live/bench" --play "$play" \
		--viewers "$STEPS" --warmup "$WARMUP" --hold "$HOLD" \
		--pid "$server_pid" --label "server=$server" --out "$RESULTS"
	cleanup
	sleep 2 # let the closed connections' sockets go
done

go run ./bench/report --in "$RESULTS" --machine "$OUT/machine.txt" \
	--md "$OUT/results.md" --data "$OUT/plot.dat" --servers "$SERVERS"
if command -v gnuplot >/dev/null; then
	gnuplot -e "datafile='$OUT/plot.dat'; outfile='$OUT/compare.png'" bench/plot.gp || echo "no plot: gnuplot failed (a log scale needs a latency above 0 ms)" >&2
	echo "compare: plot in $OUT/compare.png" >&2
fi
cat "$OUT/results.md"
