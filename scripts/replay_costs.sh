#!/usr/bin/env bash
# What on_recovery = "replay" costs, for issue 20's closing note: respite's RSS per journaled write
# (N SETs of 64-byte values written while the upstream is frozen; the same with on_recovery =
# "drop", which journals nothing, is the baseline), the replay's duration, and how long forwarding
# is held back at recovery (the recovery log line's `held`, from the transition to the fence's
# lift, and a client's first forwarded reply after SIGCONT). A measurement, not a test.
# usage: scripts/replay_costs.sh [N...]   (default: 10000 100000; BIN=path to run another build)
# Starts and stops its own redis-server and respite (release build) on loopback ports 7211-7213.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d); PIDS=()
cleanup() { for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -CONT "${PIDS[i]}" 2>/dev/null || true; kill "${PIDS[i]}" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
BIN=${BIN:-./target/release/respite}
[ "$BIN" = ./target/release/respite ] && cargo build --release --bin respite -q
redis-server --port 7211 --bind 127.0.0.1 --save '' --appendonly no --logfile "$W/redis.log" &
REDIS=$!; PIDS+=($REDIS)
for _ in $(seq 100); do redis-cli -p 7211 ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
[ $# -gt 0 ] || set -- 10000 100000
for n in "$@"; do
  for mode in drop replay; do
    redis-cli -p 7211 flushall >/dev/null
    "$BIN" --listen 127.0.0.1:7212 --upstream redis://127.0.0.1:7211 --admin 127.0.0.1:7213 \
      --set local_only.on_recovery=$mode --set local_only.journal_max_bytes=1073741824 \
      --log-level info --set log.format=json >"$W/respite-$mode.log" 2>&1 &
    R=$!
    for _ in $(seq 100); do curl -sf localhost:7213/readyz >/dev/null && break; sleep 0.05; done
    python3 scripts/replay_costs.py "$n" "$mode" "$R" "$REDIS" 7212 7213 7211 "$W/respite-$mode.log"
    kill $R; wait $R 2>/dev/null || true
  done
done
