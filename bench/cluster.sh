#!/usr/bin/env bash
# bench/cluster.sh: a three-node cluster on one machine, sharing a real
# redis-server, measured by `meshcast bench`. Two scenarios:
#
#   bench/cluster.sh tiers      # publish-to-play latency per relay tier
#   bench/cluster.sh failover   # the origin killed under an edge's viewers
#   bench/cluster.sh topologies # star, tree and mesh of five nodes
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
# topologies: five nodes, the origin N1 and N2..N5, VIEWERS HTTP-FLV
# players on each, in the default mode and with --low-latency: star (N2..N5
# pull from N1), tree (N2 and N3 pull from N1, N4 through N2 and N5
# through N3 with --parent) and mesh (--mesh on every node; N2's players
# join first and the others' 3 s apart, --stagger, so they find N2
# relaying and pull from it). One bench line
# per node (labels topology, mode, node, tier) in topologies.jsonl and one
# line per node in topologies-nodes.jsonl: its CPU over the measured window
# (cpu_pct of one core, from /proc/PID/stat), its upstreams
# (meshcast_relay_upstreams: 0 or 1 for the one stream) and the nodes
# pulling from it (meshcast_viewers{protocol="relay"}).
#
# Settings (environment): VIEWERS (300 for tiers, 1000 for failover, 100
# for topologies),
# WARMUP (5s), HOLD (20s), KILL_AFTER (5s), OUT (bench/out/cluster),
# SOURCE (bench/out/source.flv, made by bench/compare.sh; made here if
# missing).
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
SCENARIO=${1:-tiers}
WARMUP=${WARMUP:-5s}
HOLD=${HOLD:-20s}
KILL_AFTER=${KILL_AFTER:-5s}
OUT=${OUT:-bench/out/cluster}
SOURCE=${SOURCE:-bench/out/source.flv}
case $SCENARIO in
tiers) VIEWERS=${VIEWERS:-300} ;;
failover) VIEWERS=${VIEWERS:-1000} ;;
topologies) VIEWERS=${VIEWERS:-100} ;;
*) echo "cluster.sh: scenario is tiers, failover or topologies" >&2; exit 2 ;;
esac
command -v redis-server >/dev/null || { echo "cluster.sh: needs redis-server (scripts/install-test-deps.sh)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

make_source "$SOURCE" 1280x720 1900 96
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

# cpu_ticks PID: user plus system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# metric HTTP_PORT SERIES: a series' value on a node's /metrics (0 if none).
metric() {
	curl -sf "http://127.0.0.1:$1/metrics" | awk -v s="$2" '$1 == s {v = $2} END {print v + 0}'
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
topologies)
	NODES_OUT="$OUT/topologies-nodes.jsonl"
	: >"$NODES_OUT"
	warm=${WARMUP%s}
	hold=${HOLD%s}
	hz=$(getconf CLK_TCK)
	for topo in star tree mesh; do
		for mode in default low-latency; do
			extra=()
			[ "$mode" = low-latency ] && extra=(--low-latency)
			[ "$topo" = mesh ] && extra+=(--mesh)
			np=()
			node N1 19401 18401 "${extra[@]}"
			np+=("$node_pid")
			for i in 2 3 4 5; do
				parent=()
				if [ "$topo" = tree ] && [ "$i" -ge 4 ]; then parent=(--parent "N$((i - 2))"); fi
				node "N$i" "1940$i" "1840$i" "${parent[@]}" "${extra[@]}"
				np+=("$node_pid")
			done
			tiers=(0 1 1 1 1)
			[ "$topo" = tree ] && tiers=(0 1 1 2 2)
			[ "$topo" = mesh ] && tiers=(0 1 2 2 2)
			stagger=0
			# In a mesh, N2's players come first; the others, 3 s apart,
			# find N2 relaying in the registry and pull from it.
			[ "$topo" = mesh ] && stagger=3
			# The window: the players join about a second after the
			# publisher and measure from WARMUP later, for HOLD.
			(
				sleep "$((warm + 4 + 5 * stagger))"
				for i in 0 1 2 3 4; do echo "${np[$i]} $(cpu_ticks "${np[$i]}")"; done >"$OUT/cpu0"
				sleep "$((hold / 2))"
				for i in 1 2 3 4 5; do
					echo "N$i $(metric "1840$i" meshcast_relay_upstreams) $(metric "1840$i" 'meshcast_viewers{protocol="relay"}')"
				done >"$OUT/relays"
				sleep "$((hold - hold / 2 - 1))"
				while read -r pid t0; do echo "$pid $t0 $(cpu_ticks "$pid")"; done <"$OUT/cpu0" >"$OUT/cpu1"
			) &
			sampler=$!
			plays=
			for i in 1 2 3 4 5; do plays+="${plays:+,}http://127.0.0.1:1840$i/live/topo.flv"; done
			"$MESHCAST" bench --input "$SOURCE" --quiet \
				--publish "rtmp://127.0.0.1:19401/live/topo?key=$KEY" --play "$plays" \
				--viewers "$VIEWERS" --warmup "$WARMUP" --hold "$HOLD" --stagger "${stagger}s" \
				--label "topology=$topo,mode=$mode" --out "$OUT/topo.jsonl"
			wait "$sampler"
			# One line per node: the bench's (in --play order) with its
			# node and tier, and the node's own.
			i=0
			while read -r line; do
				i=$((i + 1))
				echo "$line" | jq -c --arg n "N$i" --argjson t "${tiers[$((i - 1))]}" '.labels += {node: $n, tier: $t}'
			done <"$OUT/topo.jsonl" >>"$RESULTS"
			rm -f "$OUT/topo.jsonl"
			i=0
			paste -d' ' "$OUT/cpu1" "$OUT/relays" | while read -r _ t0 t1 id up down; do
				jq -nc --arg topo "$topo" --arg mode "$mode" --arg n "$id" --argjson tier "${tiers[$i]}" \
					--argjson cpu "$(echo "scale=1; ($t1 - $t0) * 100 / $hz / ($hold - 1)" | bc)" \
					--argjson up "$up" --argjson down "$down" \
					'{topology: $topo, mode: $mode, node: $n, tier: $tier, cpu_pct: $cpu, upstreams: $up, pulled_by: $down}'
				i=$((i + 1))
			done >>"$NODES_OUT"
			stop_nodes
		done
	done
	# gnuplot data, one block per topology and mode, and the plot.
	: >"$OUT/topologies.dat"
	: >"$OUT/cpu.dat"
	for topo in star tree mesh; do
		for mode in default low-latency; do
			sel=".labels.topology == \"$topo\" and .labels.mode == \"$mode\""
			{
				echo "\"$topo $mode\" tier p50 p99"
				jq -r "select($sel) | [.labels.node, .labels.tier, .latency_ms_p50, .latency_ms_p99] | @tsv" "$RESULTS"
				printf '\n\n'
			} >>"$OUT/topologies.dat"
			{
				echo "\"$topo $mode\" cpu"
				jq -r "select(.topology == \"$topo\" and .mode == \"$mode\") | [.node, .cpu_pct] | @tsv" "$NODES_OUT"
				printf '\n\n'
			} >>"$OUT/cpu.dat"
		done
	done
	if command -v gnuplot >/dev/null; then
		gnuplot -e "dir='$OUT'; outfile='$OUT/topologies.png'" bench/topologies.gp
	fi
	cat "$NODES_OUT"
	;;
esac
cat "$RESULTS"
