#!/usr/bin/env bash
# What stateful clients cost, for issue 11's closing note: upstream connections and respite's RSS
# for 10,000 subscribers of one channel and for 1,000 clients blocked in BLPOP, the message rate to
# the 10,000 subscribers, and what a blocking client past upstream.max_pinned gets (see
# scripts/stateful_costs.py). A measurement, not a test: it prints numbers.
# usage: scripts/stateful_costs.sh [SUBSCRIBERS] [BLOCKED] [MESSAGES]
# Starts and stops its own redis-server and respite (release build) on loopback ports 7201-7202.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$(mktemp -d); PIDS=()
cleanup() { for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
cargo build --release --bin respite -q
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
redis-server --port 7201 --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000 --logfile "$W/redis.log" &
PIDS+=($!)
./target/release/respite --listen 127.0.0.1:7202 --upstream redis://127.0.0.1:7201 --admin none \
  --log-level warn --set listen.max_clients=30000 >>"$W/respite.log" 2>&1 &
RESPITE_PID=$!; PIDS+=($RESPITE_PID)
for port in 7201 7202; do
  for _ in $(seq 100); do redis-cli -p $port ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
done
python3 scripts/stateful_costs.py 7202 7201 "$RESPITE_PID" "$@"
