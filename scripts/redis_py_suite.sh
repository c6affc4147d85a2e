#!/usr/bin/env bash
# redis-py's own test suite run against one redis-server directly and through respite (no tenant,
# or with TENANT=1 as one prefixed tenant), in the same run, for issues 21 and 22's measurements. A measurement, not a test: it prints both pass counts
# and every test that passes direct but not through respite (scripts/redis_py_compare.py).
# usage: scripts/redis_py_suite.sh [PYTEST_ARGS...]
#   REDIS_PY_VERSION  the sdist to test (default: the installed redis package's version)
#   ASYNCIO=1         run tests/test_asyncio instead of the synchronous tests
#   KEEP=DIR          keep the work directory (logs, junit XML) in DIR
#   TENANT=1          clients act as one prefixed default tenant (prefix `t:`, allow @all,
#                     scripts and sort patterns on): issue 22's "a tenant sees a whole Redis"
# Starts and stops its own redis-server and respite (debug build) on loopback ports 7211-7212
# (PORT=N: N and N+1).
# Modules left out: cluster, sentinel, multi-database and maintenance scenarios need servers this
# script does not start; test_credentials (redis_entraid) and test_observability (opentelemetry)
# need packages the suite does not install; modules needing Redis Stack skip themselves.
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
VERSION=${REDIS_PY_VERSION:-$(python3 -c 'import redis; print(redis.__version__)')}
python3 -m pip install -q pytest pytest-asyncio pytest-timeout numpy 2>/dev/null || true
if [ ! -d "$W/redis-$VERSION" ]; then
  python3 -m pip download -q --no-deps --no-binary :all: "redis==$VERSION" -d "$W"
  tar xzf "$W/redis-$VERSION.tar.gz" -C "$W"
fi
cargo build --bin respite -q
R=${PORT:-7211} P=$((${PORT:-7211} + 1))
redis-server --port $R --bind 127.0.0.1 --save '' --appendonly no --enable-debug-command local \
  --logfile "$W/redis.log" &
PIDS+=($!)
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
TOML
  CONFIG=(--config "$W/tenant.toml")
fi
./target/debug/respite "${CONFIG[@]}" --listen 127.0.0.1:$P --upstream redis://127.0.0.1:$R \
  --admin none --log-level warn >>"$W/respite.log" 2>&1 &
PIDS+=($!)
for port in $R $P; do
  for _ in $(seq 200); do redis-cli -p $port ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
done
cd "$W/redis-$VERSION"
if [ -n "${ASYNCIO:-}" ]; then
  # Files, not the folder: pytest loads the conftest of every test_* folder under one it is
  # given, and test_scenario's needs aiohttp.
  SEL=()
  for f in tests/test_asyncio/test_*.py; do
    case "$f" in
      */test_cluster.py|*/test_cluster_transaction.py|*/test_sentinel.py|*/test_credentials.py) ;;
      *) SEL+=("$f") ;;
    esac
  done
else
  SEL=(tests --ignore=tests/test_asyncio --ignore=tests/test_cluster.py
    --ignore=tests/test_cluster_transaction.py --ignore=tests/test_sentinel.py
    --ignore=tests/test_scenario --ignore=tests/maint_notifications --ignore=tests/test_multidb
    --ignore=tests/test_auth --ignore=tests/test_credentials.py --ignore=tests/test_observability)
fi
for target in direct:$R respite:$P; do
  name=${target%%:*}; port=${target##*:}
  if [ -n "${TENANT:-}" ] && [ "$name" = respite ]; then
    # The upstream must deliver every keyspace event; each tenant's own notify-keyspace-events
    # (CONFIG SET through respite) chooses what reaches it (docs/tenants.md).
    redis-cli -p $R config set notify-keyspace-events KEA >/dev/null
  fi
  timeout 3000 python3 -m pytest "${SEL[@]}" --redis-url="redis://127.0.0.1:$port/0" -q \
    -p no:cacheprovider --timeout=60 --junitxml="$W/$name.xml" "$@" >"$W/$name.log" 2>&1 || true
  # A test may leave a password or data behind: reset the server for the other side.
  redis-cli -p $R config set requirepass '' >/dev/null 2>&1 || true
  redis-cli -p $R flushall >/dev/null 2>&1 || true
  tail -1 "$W/$name.log"
done
python3 "$ROOT/scripts/redis_py_compare.py" "$W/direct.xml" "$W/respite.xml"
