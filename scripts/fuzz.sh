#!/usr/bin/env bash
# Runs every fuzz target in the module for a while each, then prints a
# summary of executions and failures:
#
#   scripts/fuzz.sh [FUZZTIME] [TARGET-REGEXP]     e.g. scripts/fuzz.sh 30s
#
# FUZZTIME is any -fuzztime value (30s, 5m, 10000x); it defaults to the
# FUZZTIME environment variable, then 30s. TARGET-REGEXP (bash =~ syntax)
# picks targets by name. Targets are found by grepping the module's *_test.go
# files (outside node_modules, vendor and testdata) for "func Fuzz...", so a
# new target is picked up without editing this script. The exit status is
# non-zero if any target fails: a crash it found (its input is saved under
# the package's testdata/fuzz/), a failing seed, or a build error.
#
# FUZZMINIMIZETIME (default 5s) bounds the time go test spends minimizing
# each new input. Its own default of 60s, spent on every input that widens
# coverage, can leave a target of a minute with a few seconds of fuzzing; a
# crasher is saved whether or not its minimization finished.
set -uo pipefail

fuzztime=${1:-${FUZZTIME:-30s}}
filter=${2:-.}
minimizetime=${FUZZMINIMIZETIME:-5s}
cd "$(dirname "$0")/.." || exit 1

# "dir name" per target, e.g. "./internal/protocol/rtmp FuzzChunkReader".
targets=()
while IFS= read -r line; do
	targets+=("$line")
done < <(
	find . \( -name node_modules -o -name vendor -o -name testdata -o -name '.?*' \) -prune \
		-o -type f -name '*_test.go' -print0 |
		xargs -0 grep -Ho '^func Fuzz[A-Za-z0-9_]*' |
		sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)$|\1 \2|' |
		sort -u
)
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

logdir=$(mktemp -d "${TMPDIR:-/tmp}/meshcast-fuzz.XXXXXX")
summary=()
failed=0
ran=0
for t in "${targets[@]}"; do
	dir=${t% *}
	name=${t##* }
	[[ $name =~ $filter ]] || continue
	ran=$((ran + 1))
	log="$logdir/$(echo "${dir#./}" | tr / _)_$name.log"
	echo "== $dir $name (fuzztime $fuzztime)"
	start=$SECONDS
	go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" -fuzzminimizetime="$minimizetime" "$dir" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	# The last progress line carries the total:
	# "fuzz: elapsed: 1m0s, execs: 3505749 (58428/sec), new interesting: ..."
	execs=$(grep -Eo 'execs: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
	result=ok
	if [ "$rc" -ne 0 ]; then
		result=FAIL
		failed=$((failed + 1))
		if crasher=$(grep -Eo 'testdata/fuzz/[^ ]+' "$log" | tail -n 1); then
			result="FAIL: $dir/$crasher"
		fi
	fi
	summary+=("$(printf '%-22s %-34s %12s %6ss  %s' "$name" "${dir#./}" "${execs:--}" "$((SECONDS - start))" "$result")")
done
if [ "$ran" -eq 0 ]; then
	echo "fuzz: no fuzz target matches $filter" >&2
	exit 1
fi

echo
echo "fuzz summary (fuzztime $fuzztime, logs in $logdir)"
printf '%-22s %-34s %12s %7s  %s\n' TARGET PACKAGE EXECS TIME RESULT
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
	echo "fuzz: $failed of $ran targets failed" >&2
	exit 1
fi
echo "fuzz: all $ran targets passed"
