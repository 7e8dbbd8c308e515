#!/usr/bin/env bash
# scripts/gotest.sh ARGS…: `go test ARGS…`, its output as it comes, and,
# when it fails, the failures again at the end: each failing test's name
# and the lines its assertions printed, and any panic. A long run's output
# is often read from its last lines only.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"${GO:-go}" test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
	echo
	echo "=== failures (go test exited $status) ==="
	grep -E -- '^\s*--- FAIL|^\s+[A-Za-z0-9_./-]+_test\.go:[0-9]+: |^panic: |^FAIL\s|^\s*-test\.timeout|^goleak: ' "$log" \
		| grep -v -E 'level=(INFO|DEBUG)' | tail -n 120
	# A leak found after the tests passed names no test: show the first
	# of the goroutines left behind.
	grep -A 40 -m 1 '^goleak: ' "$log" | head -n 60
fi
exit "$status"
