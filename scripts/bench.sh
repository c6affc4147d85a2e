#!/usr/bin/env bash
# Side-by-side benchmarks in one run, the targets of each case interleaved round by round:
#   loopback  SET and GET, unpipelined and 16-deep, 50 clients: direct, twemproxy, respite
#   remote    the upstream behind a delay relay (0.25 ms each way), 8 and 50 clients, Zipf(0.99) over
#             10,000 keys with 10% SETs, values checked: direct, twemproxy, respite forwarding,
#             respite with the near cache
#   sidecar   GET and SET unpipelined, 50 clients: respite over its unix socket (upstream over TCP)
#             against the client straight to the upstream over TCP
# and then the RSS of a fresh respite holding 10,000 idle clients. Each run reports throughput,
# p50/p99/p99.9 latency (HDR histogram, examples/loadgen.rs) and the CPU per request of every process:
# the load generator, the proxy, the delay relay and redis-server (/proc/PID/stat).
# usage: scripts/bench.sh [ROUNDS]   (3)
# env:   N requests per loopback run (200000), NR per remote or sidecar run (40000), DELAY_US (250),
#        IDLE=0 skips the idle-clients figure, BUILD=0 uses the binaries already in target/release
# Needs redis-server, redis-cli, nutcracker (Debian's twemproxy), python3, curl. Starts and stops
# its own processes on loopback ports 7101-7115 and a unix socket in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; N=${N:-200000}; NR=${NR:-40000}; DELAY_US=${DELAY_US:-250}
W=$(mktemp -d); PIDS=()
cleanup() { for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
command -v nutcracker >/dev/null || { echo "needs nutcracker: apt-get install nutcracker" >&2; exit 1; }
# Two builds, not one: building the examples unifies the dev-dependencies' features into the
# library, and the respite binary measured must be the one `cargo build --release` (and
# scripts/instructions.sh) makes.
if [ "${BUILD:-1}" != 0 ]; then
  cargo build --release --bin respite -q
  cargo build --release --example loadgen --example delay_relay -q
fi
ulimit -n 65536 2>/dev/null || true
BIN=./target/release/respite; LOADGEN=./target/release/examples/loadgen

redis-server --port 7101 --bind 127.0.0.1 --save '' --appendonly no --logfile "$W/redis.log" &
REDIS_PID=$!; PIDS+=($REDIS_PID)
./target/release/examples/delay_relay 127.0.0.1:7108 127.0.0.1:7101 "$DELAY_US" &
RELAY_PID=$!; PIDS+=($RELAY_PID)
# twemproxy: one server connection, as respite's defaults pipeline over a few.
nutcracker_at() { # LISTEN_PORT UPSTREAM_PORT STATS_PORT
  printf 'p:\n  listen: 127.0.0.1:%s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  server_connections: 1\n  servers:\n   - 127.0.0.1:%s:1\n' \
    "$1" "$2" >"$W/nc.$1.yml"
  nutcracker -c "$W/nc.$1.yml" -o "$W/nc.$1.log" -s "$3" &
  PIDS+=($!)
}
nutcracker_at 7102 7101 22224; NC_PID=$!
nutcracker_at 7109 7108 22225; NC_REMOTE_PID=$!
respite_at() { # CONFIG_NAME then toml lines on stdin; prints nothing, sets LAST_PID
  cat >"$W/$1.toml"
  "$BIN" --config "$W/$1.toml" >>"$W/respite.log" 2>&1 &
  LAST_PID=$!; PIDS+=($LAST_PID)
}
respite_at loopback <<T
[listen]
tcp = "127.0.0.1:7103"
unix = "$W/respite.sock"
[upstream]
url = "redis://127.0.0.1:7101"
[admin]
listen = "127.0.0.1:7104"
[log]
level = "warn"
T
RESPITE_PID=$LAST_PID
respite_at forwarding <<T
[listen]
tcp = "127.0.0.1:7110"
[upstream]
url = "redis://127.0.0.1:7108"
[admin]
listen = "127.0.0.1:7111"
[log]
level = "warn"
T
FORWARD_PID=$LAST_PID
respite_at nearcache <<T
[listen]
tcp = "127.0.0.1:7112"
[upstream]
url = "redis://127.0.0.1:7108"
[admin]
listen = "127.0.0.1:7113"
[log]
level = "warn"
[near_cache]
enabled = true
[[near_cache.rule]]
pattern = "key:*"
T
NEAR_PID=$LAST_PID
for port in 7101 7102 7103 7109 7110 7112; do
  for _ in $(seq 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.05; done
done
# respite may have started before redis-server listened: wait until it forwards (not local-only).
healthy() {
  for _ in $(seq 200); do
    curl -s "localhost:$1/stats" | grep -q '"state":"healthy"' && return 0; sleep 0.05
  done
  echo "respite (admin $1) never became healthy" >&2; exit 1
}
healthy 7104; healthy 7111; healthy 7113
for _ in $(seq 200); do curl -s localhost:7113/stats | grep -q '"tracking":2' && break; sleep 0.05; done
redis-cli -p 7101 flushall >/dev/null
# Every key of both key sets exists before the first read (the loopback runs use key:0..999).
"$LOADGEN" --addr 127.0.0.1:7101 -c 8 -n 200000 -P 64 --keys 10000 --writes 1 >/dev/null

# CPU time of a process so far, in ns, all its threads, the exited ones too (/proc/PID/stat's utime
# and stime, in clock ticks: the relay's threads end with their connections, and schedstat, per
# live thread, would lose them).
TICK=$(getconf CLK_TCK)
cpu_ns() { awk -v t="$TICK" '{sub(/.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e9 / t}' /proc/"$1"/stat; }
# One run: CASE TARGET PROXY_PID(0: none) NETWORK(1: through the relay) REQUESTS LOADGEN_ARGS...
# appends "case target requests rps p50 p99 p999 gen proxy relay redis stale bad errors" to results.
run() {
  local case=$1 target=$2 proxy=$3 remote=$4 n=$5; shift 5
  local r0 p0=0 x0=0 r1 p1=0 x1=0 out
  r0=$(cpu_ns "$REDIS_PID"); x0=$(cpu_ns "$RELAY_PID"); [ "$proxy" != 0 ] && p0=$(cpu_ns "$proxy")
  out=$("$LOADGEN" -n "$n" "$@")
  r1=$(cpu_ns "$REDIS_PID"); x1=$(cpu_ns "$RELAY_PID"); [ "$proxy" != 0 ] && p1=$(cpu_ns "$proxy")
  [ "$remote" = 1 ] || x1=$x0
  echo "$out" | awk -v c="$case" -v t="$target" -v p=$((p1 - p0)) -v x=$((x1 - x0)) -v r=$((r1 - r0)) '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n = v["requests"]
    printf "%s %s %s %s %s %s %s %s %.3f %.3f %.3f %s %s %s\n", c, t, n, v["rps"], v["p50_us"], v["p99_us"],
      v["p999_us"], v["cpu_us"], p / 1e3 / n, x / 1e3 / n, r / 1e3 / n, v["stale"], v["bad"], v["errors"]
  }' >>"$W/results"
}
REMOTE=(--keys 10000 --zipf 0.99 --writes 0.1 --check)
for _ in $(seq "$ROUNDS"); do
  for t in set get; do
    w=0; [ $t = set ] && w=1
    for P in 1 16; do
      run "loopback-$t-P$P" direct 0 0 "$N" --addr 127.0.0.1:7101 -c 50 -P $P --writes $w
      run "loopback-$t-P$P" twemproxy "$NC_PID" 0 "$N" --addr 127.0.0.1:7102 -c 50 -P $P --writes $w
      run "loopback-$t-P$P" respite "$RESPITE_PID" 0 "$N" --addr 127.0.0.1:7103 -c 50 -P $P --writes $w
    done
  done
  for C in 8 50; do
    run "remote-c$C" direct 0 1 "$NR" --addr 127.0.0.1:7108 -c $C "${REMOTE[@]}"
    run "remote-c$C" twemproxy "$NC_REMOTE_PID" 1 "$NR" --addr 127.0.0.1:7109 -c $C "${REMOTE[@]}"
    run "remote-c$C" respite "$FORWARD_PID" 1 "$NR" --addr 127.0.0.1:7110 -c $C "${REMOTE[@]}"
    run "remote-c$C" nearcache "$NEAR_PID" 1 "$NR" --addr 127.0.0.1:7112 -c $C "${REMOTE[@]}"
  done
  for t in get set; do
    w=0; [ $t = set ] && w=1
    run "sidecar-$t" direct 0 0 "$NR" --addr 127.0.0.1:7101 -c 50 --writes $w
    run "sidecar-$t" respite-unix "$RESPITE_PID" 0 "$NR" --unix "$W/respite.sock" -c 50 --writes $w
  done
done

echo "scripts/bench.sh $ROUNDS: medians of $ROUNDS interleaved rounds; $N requests per loopback run,"
echo "$NR per remote and sidecar run; remote = ${DELAY_US} us each way through examples/delay_relay."
echo "CPU is microseconds per request of each process: the load generator, the proxy, the relay, redis-server."
python3 - "$W/results" <<'P'
import sys, statistics as st, collections
runs = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    f = line.split()
    key = (f[0], f[1])
    if key not in runs:
        order.append(key)
    runs[key].append([float(x) for x in f[3:]])
med = lambda key, i: st.median(r[i] for r in runs[key])
cases = []
for c, _ in order:
    if c not in cases:
        cases.append(c)
print("| case | target | requests/s | / direct | / twemproxy | p50 us | p99 us | p99.9 us | CPU us: gen / proxy / relay / redis | stale / bad / errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
for c in cases:
    base = med((c, "direct"), 0)
    tw = med((c, "twemproxy"), 0) if (c, "twemproxy") in runs else None
    for cc, t in order:
        if cc != c:
            continue
        k = (c, t)
        rps = med(k, 0)
        bad = "%d / %d / %d" % tuple(sum(r[i] for r in runs[k]) for i in (8, 9, 10))
        print("| %s | %s | %.0f | %.2f | %s | %.1f | %.1f | %.1f | %.2f / %.2f / %.2f / %.2f | %s |" % (
            c, t, rps, rps / base, "%.2f" % (rps / tw) if tw else "", med(k, 1), med(k, 2), med(k, 3),
            med(k, 4), med(k, 5), med(k, 6), med(k, 7), bad))
P
curl -s localhost:7113/stats | python3 -c 'import json,sys; c=json.load(sys.stdin)["near_cache"]; print("near cache (remote runs): hit ratio %.4f, %d entries" % (c["hit_ratio"], c["entries"]))'

if [ "${IDLE:-1}" != 0 ]; then
  # Idle clients against a fresh respite, so the figure is what the clients cost, not what the
  # allocator kept from the runs above.
  "$BIN" --listen 127.0.0.1:7105 --upstream redis://127.0.0.1:7101 --admin none \
    --log-level warn >>"$W/respite.log" 2>&1 &
  IDLE_PID=$!; PIDS+=($IDLE_PID)
  for _ in $(seq 100); do redis-cli -p 7105 ping >/dev/null 2>&1 && break; sleep 0.05; done
  python3 scripts/idle_clients.py 7105 10000 "$IDLE_PID"
fi
