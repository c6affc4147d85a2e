#!/usr/bin/env bash
# What a tenant's whole-keyspace commands cost beside other tenants' keys, for issue 22: DBSIZE,
# FLUSHDB, KEYS, a whole SCAN and RANDOMKEY for a tenant with 1,000 keys beside 1,000,000 keys of
# others, in time and in upstream
# round trips (commands the upstream ran, from its INFO commandstats), for a prefixed tenant in the
# shared database (the SCAN walk) and for one with a database of its own (tenant.db). See
# scripts/tenant_costs.py. A measurement, not a test: it prints numbers.
# usage: scripts/tenant_costs.sh [OTHERS] [OWN] [SERVER]   (SERVER: redis-server or a valkey-server path)
# Starts and stops its own server and respite (release build, or BIN) on loopback ports
# 7221-7222 (PORT=N: N and N+1).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${PORT:-7221} P=$((${PORT:-7221} + 1))
OTHERS=${1:-1000000}; OWN=${2:-1000}; SERVER=${3:-redis-server}
W=$(mktemp -d); PIDS=()
cleanup() { for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
trap 'cat "$W/respite.log" >&2' ERR
BIN=${BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --bin respite -q
  BIN="${CARGO_TARGET_DIR:-target}/release/respite"
fi
"$SERVER" --port $R --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command yes \
  --logfile "$W/server.log" &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p $R ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
# Before respite starts: DEBUG POPULATE blocks the server for seconds, which respite's health
# probe would rightly call an outage (and serve the tenants locally meanwhile).
redis-cli -p $R DEBUG POPULATE "$OTHERS" other >/dev/null
cat >"$W/proxy.toml" <<TOML
[[tenant]]
name = "shared"
username = "shared"
password = "ps"
prefix = "s:"
allow = ["@all"]

[[tenant]]
name = "own"
username = "own"
password = "po"
prefix = "o:"
allow = ["@all"]
db = 1
TOML
"$BIN" --config "$W/proxy.toml" --listen 127.0.0.1:$P \
  --upstream redis://127.0.0.1:$R --admin none --log-level warn >>"$W/respite.log" 2>&1 &
PIDS+=($!)
for port in $R $P; do
  for _ in $(seq 100); do redis-cli -p $port ping 2>/dev/null | grep -qE 'PONG|NOAUTH' && break; sleep 0.05; done
done
python3 scripts/tenant_costs.py $P $R "$OTHERS" "$OWN"
