#!/usr/bin/env bash
# Installs what bench/compare.sh needs on Debian: nginx with the RTMP module,
# ffmpeg (to make the source file) and gnuplot (for the plot).
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "bench: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
