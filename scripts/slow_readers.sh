#!/usr/bin/env bash
# Slow readers against respite's memory bound (issue 24): N clients (2,000 by default) each
# pipeline 100 GETs of a 100 KB value and never read, beside a client that reads; reports
# respite's RSS at start, at its peak, while they run and after they close, the reading client's
# p50/p99 alone and beside them, and how many clients respite closed for its limits (see
# scripts/slow_readers.py). A measurement, not a test: it prints numbers.
# usage: scripts/slow_readers.sh [N] [SECONDS] [-- respite flags such as --set limits.max_client_memory=…]
#   BIN=path/to/respite to measure another build (default: this tree's release build).
# Starts and stops its own redis-server and respite on loopback ports 7211-7213.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}; SECONDS_RUN=${2:-10}; shift $(( $# > 2 ? 2 : $# )); [ "${1:-}" = "--" ] && shift
W=$(mktemp -d); PIDS=()
cleanup() { for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
if [ -z "${BIN:-}" ]; then cargo build --release --bin respite -q; BIN=./target/release/respite; fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
redis-server --port 7211 --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000 --logfile "$W/redis.log" &
PIDS+=($!)
"$BIN" --listen 127.0.0.1:7212 --upstream redis://127.0.0.1:7211 --admin 127.0.0.1:7213 \
  --log-level error --set listen.max_clients=30000 --set local_only.enabled=false "$@" >>"$W/respite.log" 2>&1 &
RESPITE_PID=$!; PIDS+=($RESPITE_PID)
for port in 7211 7212; do
  for _ in $(seq 100); do redis-cli -p $port ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
done
python3 scripts/slow_readers.py 7212 "$RESPITE_PID" 7211 "$N" "$SECONDS_RUN" 7213
