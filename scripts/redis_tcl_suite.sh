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
#   KEEP=DIR     keep the work directory (per-unit logs) in DIR
# Each unit runs direct, then through respite, against the same redis-server on ephemeral loopback
# ports; between sides the server's password is cleared and its data flushed (the suite flushes at
# each unit's start itself). A unit killed at its limit keeps the results it printed; its remaining
# tests count as not passed and the unit is listed as hung.
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
R=$(free_port) P=$(free_port)
redis-server --port "$R" --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command local \
  --logfile "$W/redis.log" &
PIDS+=($!)
for _ in $(seq 200); do redis-cli -p "$R" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
"$W/respite-bin" --listen "127.0.0.1:$P" --upstream "redis://127.0.0.1:$R" --admin none \
  --log-level warn >>"$W/respite.log" 2>&1 &
PIDS+=($!)
# Ready when a command only the upstream serves (not PING) goes through.
for _ in $(seq 200); do redis-cli -p "$P" function flush 2>/dev/null | grep -qx OK && break; sleep 0.05; done
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
  for target in direct:$R respite:$P; do
    name=${target%%:*}; port=${target##*:}
    log="$W/$name/${unit//\//_}.log"
    start=$(date +%s)
    rc=0
    TERM=dumb timeout -k 10 "$UNIT_TIMEOUT" ./runtest --host 127.0.0.1 --port "$port" --singledb --durable \
      --timeout $((UNIT_TIMEOUT / 3)) --tags "$TAGS" --single "$unit" >"$log" 2>&1 || rc=$?
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo "[hung]: killed after ${UNIT_TIMEOUT}s" >>"$log"
    printf '%-8s %-32s %4ss ok=%s err=%s\n' "$name" "$unit" $(( $(date +%s) - start )) \
      "$(grep -c '^\[ok\]' "$log" || true)" "$(grep -c '^\[err\]' "$log" || true)"
    # A test may leave a password, users or data behind: reset the server for the other side.
    redis-cli -p "$R" config set requirepass '' >/dev/null 2>&1 || true
    redis-cli -p "$R" flushall >/dev/null 2>&1 || true
    for user in $(redis-cli -p "$R" acl users 2>/dev/null); do
      [ "$user" = default ] || redis-cli -p "$R" acl deluser "$user" >/dev/null 2>&1 || true
    done
    redis-cli -p "$R" acl setuser default reset on nopass '~*' '&*' +@all >/dev/null 2>&1 || true
    # The tests' own stray server processes, if a unit was killed mid-way, are theirs to end: the
    # suite kills what it started when it exits normally.
  done
done
python3 "$ROOT/scripts/redis_tcl_compare.py" "$W/direct" "$W/respite"
