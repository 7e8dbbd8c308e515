#!/usr/bin/env bash
# bench/build-mediamtx.sh SRC OUT: builds MediaMTX from its source tree SRC
# into the binary OUT, for bench/compare-rtc.sh. MediaMTX embeds files
# that its `go generate` downloads (hls.js, its version): where that has
# no network, stand-ins are written (the benchmark serves neither).
set -euo pipefail
src=${1:?usage: bench/build-mediamtx.sh SRC OUT}
out=${2:?usage: bench/build-mediamtx.sh SRC OUT}
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
cd "$src"
[ -s internal/core/VERSION ] || git describe --tags 2>/dev/null >internal/core/VERSION || echo "v0.0.0-source" >internal/core/VERSION
[ -s internal/servers/hls/hls.min.js ] || echo "// stand-in: hls.js is not served by the benchmark" >internal/servers/hls/hls.min.js
GOFLAGS=-mod=mod go build -o "$out" .
echo "built $out ($(cat internal/core/VERSION))" >&2
