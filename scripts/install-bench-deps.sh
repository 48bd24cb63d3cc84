#!/usr/bin/env bash
# Debian packages the benchmark suite (python -m bench) uses (idempotent; run as root).
#   wrk: the HTTP load generator for the intake figures. A Python client tops out near 450
#        requests/s on this kind of machine, below what the API does; wrk (C, one Lua script
#        making distinct bodies and Idempotency-Keys) is not the bottleneck. Without it the
#        bench falls back to its Python client and says so in the table.
set -euo pipefail
packages=(wrk)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-bench-deps: missing ${missing[*]} and not root: the bench uses its Python load generator" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
