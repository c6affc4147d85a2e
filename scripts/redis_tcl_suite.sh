#!/usr/bin/env bash
# Redis's own Tcl test suite (external mode, single database, tags that need no server control) run
# against one redis-server directly and through respite (no tenant), unit by unit, in the same run:
# issue 21's headline measure. A measurement, not a test (a full run takes about an hour): it prints
# both pass counts, their ratio, the units that hung, and every test that passes direct but not
# through respite (scripts/redis_tcl_compare.py).
# usage: scripts/redis_tcl_suite.sh [UNIT...]        (default: every unit of the suite's own list)
#   REDIS_SRC    a directory holding the suite's runtest and tests/ (default: extracted from
#                REDIS_GIT at REDIS_TAG into $W/redis-$REDIS_TAG)
#   REDIS_GIT    a git directory of github.com/redis/redis with its tags (e.g. a `git clone --mirror`)
#   REDIS_TAG    the tag whose tests to run (default: the installed redis-server's version)
#   UNIT_TIMEOUT wall-clock seconds one unit may take on one side before it is killed (default 300);
#                the suite's own --timeout (no progress) is a third of it
#   BASEPORT     the suite's own base port (default 21111; its test server listens 32 below it):
#                another value for a second run at the same time
#   KEEP=DIR     keep the work directory (per-unit logs) in DIR
#   TENANT=1     the respite side's clients act as one prefixed default tenant (prefix `t:`, allow
#                @all, scripts and sort patterns on, server_config = ["*"]: every unit tunes the
#                server with CONFIG SET; the upstream's notify-keyspace-events KEA): issue 22's
#                "a tenant sees a whole Redis"
# Each unit runs direct, then through respite, each side against a fresh redis-server of the same
# binary and settings (and a fresh respite) on ephemeral loopback ports. A unit killed at its limit
# keeps the results it printed; its remaining tests count as not passed and the unit is listed as
# hung.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${KEEP:-$(mktemp -d)}; mkdir -p "$W"; PIDS=()
cleanup() {
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
TAG=${REDIS_TAG:-$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')}
SRC=${REDIS_SRC:-$W/redis-$TAG}
if [ ! -x "$SRC/runtest" ]; then
  [ -n "${REDIS_GIT:-}" ] || { echo "set REDIS_SRC or REDIS_GIT (see the header)" >&2; exit 2; }
  mkdir -p "$SRC"
  git --git-dir="$REDIS_GIT" archive "$TAG" runtest tests | tar x -C "$SRC"
fi
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cargo build --bin respite -q
cp target/debug/respite "$W/respite-bin"   # later builds in this tree leave the run alone
CONFIG=()
if [ -n "${TENANT:-}" ]; then
  cat >"$W/tenant.toml" <<'TOML'
default_tenant = "t"
[[tenant]]
name = "t"
prefix = "t:"
allow = ["@all"]
scripts = true
sort_patterns = true
server_config = ["*"]
TOML
  CONFIG=(--config "$W/tenant.toml")
fi
# Start a fresh redis-server (and, for the respite side, a respite in front of it) and print
# the port the suite is to use. Each side of each unit gets its own: a unit leaves configuration,
# users and data behind (in external mode the suite restores none of the CONFIG SETs its tests
# make), which would otherwise decide the next side's results.
up() {
  local side=$1 r p
  r=$(free_port)
  redis-server --port "$r" --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command local \
    --logfile "$W/redis.log" >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do redis-cli -p "$r" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  [ "$side" = direct ] && { echo "$r"; return; }
  p=$(free_port)
  # The upstream must deliver every keyspace event; the tenant's own notify-keyspace-events
  # (CONFIG SET through respite) chooses what reaches it (docs/tenants.md).
  [ -n "${TENANT:-}" ] && redis-cli -p "$r" config set notify-keyspace-events KEA >/dev/null
  "$W/respite-bin" "${CONFIG[@]}" --listen "127.0.0.1:$p" --upstream "redis://127.0.0.1:$r" --admin none \
    --log-level warn >>"$W/respite.log" 2>&1 &
  PIDS+=($!)
  # Ready when a command only the upstream serves (not PING) goes through.
  for _ in $(seq 200); do redis-cli -p "$p" function flush 2>/dev/null | grep -qx OK && break; sleep 0.05; done
  echo "$p"
}
down() {
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  # A server still running a script a killed unit left behind ignores SIGTERM: after 5 s, SIGKILL.
  for _ in $(seq 50); do
    alive=0; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
if [ $# -gt 0 ]; then
  UNITS=("$@")
else
  # The suite's own unit list (test_helper.tcl's ::all_tests), in its order.
  mapfile -t UNITS < <(sed -n '/^set ::all_tests {/,/^}/p' "$SRC/tests/test_helper.tcl" | sed '1d;$d' | tr -d ' ')
fi
# Tags that need server control an external server does not give (external:skip is implied).
TAGS='-needs:repl -needs:debug -needs:pfdebug -needs:config-maxmemory -needs:config-resetstat -needs:save'
mkdir -p "$W/direct" "$W/respite"
cd "$SRC"
for unit in "${UNITS[@]}"; do
  for name in direct respite; do
    # (In this shell, not a subshell, so PIDS keeps what up started.)
    up "$name" >"$W/port"; port=$(cat "$W/port")
    log="$W/$name/${unit//\//_}.log"
    start=$(date +%s)
    rc=0
    TERM=dumb timeout -k 10 "$UNIT_TIMEOUT" ./runtest --host 127.0.0.1 --port "$port" --singledb \
      --durable --baseport "${BASEPORT:-21111}" --timeout $((UNIT_TIMEOUT / 3)) --tags "$TAGS" \
      --single "$unit" >"$log" 2>&1 || rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "[hung]: killed after ${UNIT_TIMEOUT}s" >>"$log"; fi
    printf '%-8s %-40s %4ss ok=%s err=%s\n' "$name" "$unit" $(( $(date +%s) - start )) \
      "$(grep -c '^\[ok\]' "$log" || true)" "$(grep -c '^\[err\]' "$log" || true)"
    down
  done
done
python3 "$ROOT/scripts/redis_tcl_compare.py" "$W/direct" "$W/respite"
