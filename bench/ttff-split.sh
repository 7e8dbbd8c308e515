#!/usr/bin/env bash
# bench/ttff-split.sh: where a burst of RTMP joins spends its time to first
# frame, split between meshcast and the load generator. It builds meshcast
# with -tags ttfftrace, whose RTMP sessions record when each play command
# reached the socket (the kernel's receive stamp), when the session took it
# up, and when the answer carrying the first picture was written; and it
# matches those, connection by connection, with what `meshcast bench
# --first-frames` saw: when the player sent play and when its kernel
# received the first picture.
#
#   bench/ttff-split.sh              # three runs of a 1000-join burst
#   RUNS=5 STEPS=10,1000 bench/ttff-split.sh
#
# Needs bench/out/source.flv: run bench/compare.sh once (STEPS=100 HOLD=1s
# is enough) or set SOURCE. Settings: RUNS (3), STEPS (1000), WARMUP (1s), SOURCE,
# SERVER_CPU (0), LOAD_CPU (1), RTMP_PORT (19350), HTTP_PORT (18090).
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
STEPS=${STEPS:-1000}
WARMUP=${WARMUP:-1s}
SOURCE=${SOURCE:-bench/out/source.flv}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RTMP_PORT=${RTMP_PORT:-19350}
HTTP_PORT=${HTTP_PORT:-18090}

if [ ! -s "$SOURCE" ]; then
	echo "ttff-split: no $SOURCE: run bench/compare.sh once, or set SOURCE" >&2
	exit 2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
dir=$(mktemp -d)
server=""
cleanup() {
	if [ -n "$server" ]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
go build -tags ttfftrace -o "$dir/meshcast" ./cmd/meshcast

# quantiles LABEL: p50, p90, p99 and max of the numbers on standard input.
quantiles() {
	sort -n | awk -v label="$1" '{ v[NR] = $1 }
		END { printf "  %-34s p50 %7.2f  p90 %7.2f  p99 %7.2f  max %7.2f ms\n", label,
			v[int(NR*0.5)+1], v[int(NR*0.9)+1], v[int(NR*0.99)+1], v[NR] }'
}

for run in $(seq "$RUNS"); do
	MESHCAST_FIRST_PICTURES="$dir/server.txt" taskset -c "$SERVER_CPU" "$dir/meshcast" serve \
		--rtmp-addr "127.0.0.1:$RTMP_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
		--log-level error --max-connections-per-ip 0 >"$dir/server.log" 2>&1 &
	server=$!
	sleep 0.5
	if ! kill -0 "$server" 2>/dev/null; then
		cat "$dir/server.log" >&2
		exit 1
	fi
	url="rtmp://127.0.0.1:$RTMP_PORT/live/bench"
	taskset -c "$LOAD_CPU" "$dir/meshcast" bench --input "$SOURCE" --publish "$url" --play "$url" \
		--viewers "$STEPS" --warmup "$WARMUP" --hold 1s --pid "$server" --quiet \
		--first-frames "$dir/players.txt" >"$dir/steps.jsonl"
	kill "$server"
	wait "$server" 2>/dev/null || true
	server=""
	# Server lines: ADDR ARRIVED HANDLED WRITTEN; player lines: ADDR SENT
	# RECEIVED. The last step's players are the last lines.
	awk 'NR == FNR { s[$1] = $2 " " $3 " " $4; next }
		($1 in s) { split(s[$1], t, " ");
			printf "%.3f %.3f %.3f %.3f %.3f %.3f\n", (t[2]-t[1])/1e6, (t[3]-t[2])/1e6, ($3-t[3])/1e6, ($3-$2)/1e6, (t[1]-$2)/1e6, (t[3]-t[1])/1e6 }' \
		"$dir/server.txt" "$dir/players.txt" | tail -n "${STEPS##*,}" >"$dir/split.txt"
	echo "run $run: $(wc -l <"$dir/split.txt") players matched; bench: $(tail -1 "$dir/steps.jsonl" | grep -o '"ttff_ms_p50":[0-9.]*,"ttff_ms_p99":[0-9.]*')"
	cut -d' ' -f5 "$dir/split.txt" | quantiles "play sent -> reached the server"
	cut -d' ' -f1 "$dir/split.txt" | quantiles "reached -> taken up by the session"
	cut -d' ' -f2 "$dir/split.txt" | quantiles "taken up -> first picture written"
	cut -d' ' -f6 "$dir/split.txt" | quantiles "reached -> first picture written"
	cut -d' ' -f3 "$dir/split.txt" | quantiles "written -> player's receive stamp"
	cut -d' ' -f4 "$dir/split.txt" | quantiles "time to first frame (bench)"
done
