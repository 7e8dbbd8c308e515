#!/usr/bin/env bash
# Runs every fuzz target in the module for a while each: scripts/fuzz.sh 30s
set -euo pipefail
time=${1:-30s}
cd "$(dirname "$0")/.."
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "== $pkg $f"
		go test -run=NONE -fuzz="^$f\$" -fuzztime="$time" "$pkg"
	done
done
