#!/bin/sh
# Runs meshcast sim with every selector at the defaults (1000 nodes, 10,000
# streams, a million viewers) and with 100 nodes, keeps the JSON and the
# tables under bench/results/sim/ and plots them (sim.png) with gnuplot.
# Then the topologies at the defaults, least-loaded and affinity: flat (one
# tier, every node owns streams and serves viewers), star (origins and
# edges pulling from them), tree (three tiers, --parent) and mesh (origins
# and edges, --mesh: edges pull from a peer pulling from the origin), in
# topologies.md.
#   bench/sim.sh            # SEED=1 NODES="1000 100"
#   RUN=0 bench/sim.sh      # tables and plot again from the JSON kept
set -eu
cd "$(dirname "$0")/.."
OUT=bench/results/sim
SEED=${SEED:-1}
NODES=${NODES:-1000 100}
mkdir -p "$OUT"
BIN=$(mktemp -d)/meshcast
go build -o "$BIN" ./cmd/meshcast

for n in $NODES; do
	[ "${RUN:-1}" = 0 ] && break
	/usr/bin/time -f "nodes $n: %e s wall, %U s user, %M KB peak RSS" \
		"$BIN" sim --nodes "$n" --balance all --seed "$SEED" --quiet --json >"$OUT/nodes$n.json"
done

# gnuplot data: one block per cluster size.
: >"$OUT/egress.dat"
: >"$OUT/ops.dat"
: >"$OUT/recovery.dat"
for n in $NODES; do
	f="$OUT/nodes$n.json"
	"$BIN" sim --from-json "$f" >"$OUT/nodes$n.md"
	{
		echo "\"$n nodes\""
		jq -r '.runs[] | [.config.balance, .phases[0].origin_egress, .phases[0].pulls] | @tsv' "$f"
		printf '\n\n'
	} >>"$OUT/egress.dat"
	{
		echo "\"$n nodes\" heartbeats renewals relay-records lookups"
		jq -r '.runs[] | [.config.balance] + [.registry_ops.by_kind[0:4][].per_second] | @tsv' "$f" |
			awk -v n="$n" 'BEGIN{OFS="\t"} {print $1, $2/n, $3/n, $4/n, $5/n}'
		printf '\n\n'
	} >>"$OUT/ops.dat"
	{
		echo "\"$n nodes\""
		jq -r '.runs[] | (.phases | map({(.name): .}) | add) as $p |
			[.config.balance, $p.kill.replaced_ns/1e9, $p.kill.restored_ns/1e9, $p.region.replaced_ns/1e9, $p.region.restored_ns/1e9] | @tsv' "$f"
		printf '\n\n'
	} >>"$OUT/recovery.dat"
done

# Topologies: name, then meshcast sim flags.
topos="flat:--tiers=1 star:--tiers=2 tree:--tiers=3 mesh:--tiers=2,--mesh"
for t in $topos; do
	[ "${RUN:-1}" = 0 ] && break
	name=${t%%:*}
	flags=$(echo "${t#*:}" | tr ',' ' ')
	for b in least-loaded affinity; do
		# shellcheck disable=SC2086
		"$BIN" sim $flags --balance "$b" --seed "$SEED" --quiet --json >"$OUT/topo-$name-$b.json"
	done
done
{
	echo "| topology | balance | relay hops, origin to viewer's node | origin egress (streams) | pulls | relays/stream mean | p99 | upstreams/stream/node max | viewers/node max | mean | node records read a second | records written a second |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	for t in $topos; do
		name=${t%%:*}
		for b in least-loaded affinity; do
			jq -r --arg t "$name" --arg b "$b" '.runs[0] as $r | $r.phases[0] as $p |
				((if $r.config.tiers == 3 then 2 else 1 end) + (if $r.config.mesh then 1 else 0 end)) as $hops |
				[$t, $b, "\($hops)\(if $r.config.mesh then " (at most)" else "" end)", $p.origin_egress, $p.pulls, ($p.relays_per_stream_mean * 10 | round / 10),
				 $p.relays_per_stream_p99, $p.max_upstreams_per_stream_per_node, $p.load_max, ($p.load_mean | round),
				 ($r.registry_ops.by_kind[3].per_second | round), (($r.registry_ops.by_kind[0:3] | map(.per_second) | add) | round)] |
				"| " + (map(tostring) | join(" | ")) + " |"' "$OUT/topo-$name-$b.json"
		done
	done
} >"$OUT/topologies.md"

if command -v gnuplot >/dev/null; then
	gnuplot -e "dir='$OUT'; outfile='$OUT/sim.png'" bench/sim.gp
fi
