#!/bin/sh
# Runs meshcast sim with every selector at the defaults (1000 nodes, 10,000
# streams, a million viewers) and with 100 nodes, keeps the JSON and the
# tables under bench/results/sim/ and plots them (sim.png) with gnuplot.
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
		jq -r '.runs[] | [.config.balance, .phases[1].replaced_ns/1e9, .phases[1].restored_ns/1e9, .phases[2].replaced_ns/1e9, .phases[2].restored_ns/1e9] | @tsv' "$f"
		printf '\n\n'
	} >>"$OUT/recovery.dat"
done

if command -v gnuplot >/dev/null; then
	gnuplot -e "dir='$OUT'; outfile='$OUT/sim.png'" bench/sim.gp
fi
