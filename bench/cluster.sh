#!/usr/bin/env bash
# bench/cluster.sh: a three-node cluster on one machine, sharing a real
# redis-server, measured by `meshcast bench`. Two scenarios:
#
#   bench/cluster.sh tiers      # publish-to-play latency per relay tier
#   bench/cluster.sh failover   # the origin killed under an edge's viewers
#
# tiers: an origin, an edge pulling from it (tier 1) and an edge pulling
# through that one (--parent, tier 2); VIEWERS HTTP-FLV players on each
# node at once, in the default mode and then with --low-latency on every
# node. One JSON line per tier and mode.
#
# failover: nodes A (origin), B (edge) and C; VIEWERS RTMP players on B.
# The publisher presents its publish key; KILL_AFTER into the measuring
# window A is killed with SIGKILL, and the publisher reconnects 0.5 s later
# to C with the same key. The line gives the players' longest video gap
# (gap_ms_max: every viewer's longest; gap_ms_p99), the time C took to
# accept the publish (publish_accept_ms) and players cut off (dropped).
#
# Settings (environment): VIEWERS (300 for tiers, 1000 for failover),
# WARMUP (5s), HOLD (20s), KILL_AFTER (5s), OUT (bench/out/cluster),
# SOURCE (bench/out/source.flv, made by bench/compare.sh; made here if
# missing).
set -euo pipefail

cd "$(dirname "$0")/.."
SCENARIO=${1:-tiers}
WARMUP=${WARMUP:-5s}
HOLD=${HOLD:-20s}
KILL_AFTER=${KILL_AFTER:-5s}
OUT=${OUT:-bench/out/cluster}
SOURCE=${SOURCE:-bench/out/source.flv}
case $SCENARIO in
tiers) VIEWERS=${VIEWERS:-300} ;;
failover) VIEWERS=${VIEWERS:-1000} ;;
*) echo "cluster.sh: scenario is tiers or failover" >&2; exit 2 ;;
esac
command -v redis-server >/dev/null || { echo "cluster.sh: needs redis-server (scripts/install-test-deps.sh)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ ! -s "$SOURCE" ]; then
	mkdir -p "$(dirname "$SOURCE")"
	ffmpeg -hide_banner -loglevel error -y \
		-f lavfi -i testsrc2=size=1280x720:rate=30 \
		-f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
		-c:v libx264 -preset veryfast -b:v 1900k -maxrate 1900k -bufsize 1900k \
		-g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p \
		-c:a aac -b:a 96k -f flv "$SOURCE"
fi
go build -o "$OUT/meshcast" ./cmd/meshcast
MESHCAST="$OUT/meshcast"

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

REDIS_PORT=${REDIS_PORT:-16379}
SECRET=cluster-bench-secret-0123456789
KEY=cluster-bench-publish-key
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
pids+=($!)

# node ID RTMP_PORT HTTP_PORT [flags...]: starts a node, its PID in $node_pid.
node() {
	local id=$1 rtmp=$2 http=$3
	shift 3
	"$MESHCAST" serve --redis "redis://127.0.0.1:$REDIS_PORT/0" --cluster-secret "$SECRET" \
		--node-id "$id" --advertise-host 127.0.0.1 --rtmp-addr "127.0.0.1:$rtmp" --http-addr "127.0.0.1:$http" \
		--srt-addr 127.0.0.1:0 --webrtc-udp-addr 127.0.0.1:0 --rtsp-addr 127.0.0.1:0 \
		--rtsp-udp-rtp-addr= --rtsp-udp-rtcp-addr= --max-connections-per-ip 0 --publish-keys "live=$KEY" --log-level warn "$@" \
		>"$OUT/$id.log" 2>&1 &
	node_pid=$!
	pids+=("$node_pid")
	for _ in $(seq 100); do
		if curl -sf "http://127.0.0.1:$http/readyz" >/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "cluster.sh: node $id did not start: $(cat "$OUT/$id.log")" >&2
	exit 1
}

stop_nodes() {
	for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	pids=("${pids[0]}")
	sleep 1
}

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores online)"
	echo "meshcast: $("$MESHCAST" version 2>/dev/null | head -1)"
	echo "command: VIEWERS=$VIEWERS WARMUP=$WARMUP HOLD=$HOLD bench/cluster.sh $SCENARIO"
} >"$OUT/$SCENARIO-machine.txt"
RESULTS="$OUT/$SCENARIO.jsonl"
: >"$RESULTS"

case $SCENARIO in
tiers)
	for mode in default low-latency; do
		extra=()
		[ "$mode" = low-latency ] && extra=(--low-latency)
		node origin 19401 18401 "${extra[@]}"
		node tier1 19402 18402 "${extra[@]}"
		node tier2 19403 18403 --parent tier1 "${extra[@]}"
		"$MESHCAST" bench --input "$SOURCE" --quiet \
			--publish "rtmp://127.0.0.1:19401/live/tiers?key=$KEY" \
			--play "http://127.0.0.1:18401/live/tiers.flv,http://127.0.0.1:18402/live/tiers.flv,http://127.0.0.1:18403/live/tiers.flv" \
			--viewers "$VIEWERS" --warmup "$WARMUP" --hold "$HOLD" --label "mode=$mode" --out "$RESULTS"
		stop_nodes
	done
	;;
failover)
	node A 19401 18401
	a_pid=$node_pid
	node B 19402 18402
	node C 19403 18403
	warm=${WARMUP%s}
	kill_after=${KILL_AFTER%s}
	(sleep "$(echo "$warm + 3 + $kill_after" | bc)" && kill -9 "$a_pid" && echo "cluster.sh: killed A at $(date +%T.%N)" >&2) &
	"$MESHCAST" bench --input "$SOURCE" --quiet \
		--publish "rtmp://127.0.0.1:19401/live/failover?key=$KEY,rtmp://127.0.0.1:19403/live/failover?key=$KEY" \
		--play "rtmp://127.0.0.1:19402/live/failover" \
		--viewers "$VIEWERS" --warmup "$WARMUP" --hold "$HOLD" --label "scenario=failover" --out "$RESULTS"
	;;
esac
cat "$RESULTS"
