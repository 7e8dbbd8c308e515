#!/usr/bin/env bash
# Checks meshcast and its dependencies against the Go vulnerability
# database with govulncheck, and fails when the code calls a known
# vulnerable function. The database is vuln.go.dev when it can be reached;
# otherwise a snapshot built from a pinned golang.org/x/vulndb module
# version, fetched through the Go module proxy (VULNDB_VERSION: raise it to
# refresh). Tools and the snapshot are cached under ~/.cache/meshcast.
set -euo pipefail
cd "$(dirname "$0")/.."

GOVULNCHECK_VERSION=v1.1.4
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/meshcast"
mkdir -p "$cache/bin"

bin="$cache/bin/govulncheck-$GOVULNCHECK_VERSION"
if [ ! -x "$bin" ]; then
	echo "vulncheck: installing govulncheck $GOVULNCHECK_VERSION" >&2
	GOBIN="$cache/bin/tmp" go install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
	mv "$cache/bin/tmp/govulncheck" "$bin"
fi

db=https://vuln.go.dev
if ! curl -fsS --max-time 5 -o /dev/null "$db/index/db.json" 2>/dev/null; then
	snap="$cache/vulndb-$VULNDB_VERSION"
	if [ ! -f "$snap/index/db.json" ]; then
		echo "vulncheck: vuln.go.dev unreachable; building the database snapshot $VULNDB_VERSION" >&2
		dir="$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
		rm -rf "$snap.tmp"
		go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$dir/data/osv" -out "$snap.tmp"
		mv "$snap.tmp" "$snap"
	fi
	db="file://$snap"
	echo "vulncheck: using the database snapshot $VULNDB_VERSION" >&2
fi
"$bin" -db "$db" ./...
