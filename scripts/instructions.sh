#!/usr/bin/env bash
# respite's own instructions per request, counted by callgrind: unlike requests/s on a shared VM,
# the count does not depend on what else the host is doing, so it compares builds exactly.
# usage: [BIN=path/to/respite] [CMD=get|set] [NEAR_CACHE=1] [KEEP=dir] scripts/instructions.sh [N]
#   N requests per case, 20000; 50 clients; unpipelined and 16-deep. BIN: another build to compare,
#   default this tree's release build. CMD: the command measured (GET by default). NEAR_CACHE=1:
#   respite's near cache covers every key (for SET: what a write costs with it on). KEEP: keep the
#   callgrind profiles there (cg.1, cg.16) for callgrind_annotate.
# Needs valgrind. Starts and stops its own redis-server and respite on loopback ports 7121-7123.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
CMD=${CMD:-get}
CONFIG=()
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }
BIN=${BIN:-./target/release/respite}; [ "$BIN" = ./target/release/respite ] && cargo build --release --bin respite -q
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
redis-server --port 7121 --bind 127.0.0.1 --save '' --appendonly no --logfile "$W/redis.log" &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p 7121 ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-benchmark -p 7121 -t set -n 20000 -r 1000 -d 64 -q >/dev/null
if [ "${NEAR_CACHE:-0}" = 1 ]; then
  printf '[near_cache]\nenabled = true\n[[near_cache.rule]]\npattern = "*"\n' >"$W/near.toml"
  CONFIG=(--config "$W/near.toml")
fi
for P in 1 16; do
  n=$((N * P / 4 + N))
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/cg.$P" \
    "$BIN" "${CONFIG[@]}" --listen 127.0.0.1:7122 --upstream redis://127.0.0.1:7121 \
    --admin 127.0.0.1:7123 --log-level warn >"$W/respite.$P.log" 2>&1 &
  VP=$!; PIDS+=($VP)
  for _ in $(seq 200); do
    curl -s localhost:7123/stats | grep -q '"state":"healthy"' && break; sleep 0.1
  done
  # The upstream's own command table is read once at start, off the request path: a command only
  # the upstream knows (LCS) waits for it, so its parsing stays out of the count.
  redis-cli -p 7122 lcs a b >/dev/null 2>&1 || true
  callgrind_control -i on "$VP" >/dev/null 2>&1
  redis-benchmark -p 7122 -t "$CMD" -n "$n" -c 50 -P "$P" -r 1000 -d 64 -q >/dev/null 2>&1
  callgrind_control -i off "$VP" >/dev/null 2>&1
  kill "$VP"; wait "$VP" 2>/dev/null || true
  total=$(callgrind_annotate "$W/cg.$P" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(/,/,"",$1); print $1}')
  LABEL=${CMD^^}; [ "${NEAR_CACHE:-0}" = 1 ] && LABEL="$LABEL (near cache on)"
  echo "$LABEL, 50 clients, pipeline $P: $((total / n)) instructions per request ($n requests)"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$W/cg.$P" "$KEEP/"; fi
done
