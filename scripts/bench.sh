#!/usr/bin/env bash
# Throughput of the upstream direct, through twemproxy (Debian's nutcracker) and through respite, in
# one run, with the ratios; then cached GETs through the near cache against the upstream direct, the
# near cache's hit ratio under a Zipf key distribution, and the RSS of respite holding 10,000 idle
# clients.
# usage: scripts/bench.sh [ROUNDS]      env: N requests per case (200000), C clients (50), D value bytes (64)
# Starts and stops its own redis-server, nutcracker and respite on loopback ports 7101-7107.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; N=${N:-200000}; C=${C:-50}; D=${D:-64}
W=$(mktemp -d); PIDS=()
cleanup() { for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
command -v nutcracker >/dev/null || { echo "needs nutcracker: apt-get install nutcracker" >&2; exit 1; }
cargo build --release --bin respite -q
ulimit -n 65536 2>/dev/null || true

redis-server --port 7101 --bind 127.0.0.1 --save '' --appendonly no --logfile "$W/redis.log" &
PIDS+=($!)
cat > "$W/nc.yml" <<Y
alpha:
  listen: 127.0.0.1:7102
  hash: fnv1a_64
  distribution: ketama
  redis: true
  server_connections: 1
  servers:
   - 127.0.0.1:7101:1
Y
nutcracker -c "$W/nc.yml" -o "$W/nc.log" -s 22224 &
PIDS+=($!)
./target/release/respite --listen 127.0.0.1:7103 --upstream redis://127.0.0.1:7101 --admin 127.0.0.1:7104 \
  --log-level warn ${RESPITE_ARGS:-} >>"$W/respite.log" 2>&1 &
RESPITE_PID=$!; PIDS+=($RESPITE_PID)
for port in 7101 7102 7103; do
  for _ in $(seq 100); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.05; done
done
# respite may have started before redis-server listened: wait until it forwards (not local-only).
healthy() {
  for _ in $(seq 200); do
    curl -s "localhost:$1/stats" | grep -q '"state":"healthy"' && return 0; sleep 0.05
  done
  echo "respite (admin $1) never became healthy" >&2; exit 1
}
healthy 7104
redis-cli -p 7101 flushall >/dev/null

# CPU time of a process so far, in ns, all its threads (schedstat: nanosecond resolution).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.0f\n", s}'; }
REDIS_PID=${PIDS[0]}; NC_PID=${PIDS[1]}
declare -A PROXY=([7102]=$NC_PID [7103]=$RESPITE_PID)
# One case: requests/s, then CPU microseconds per request of redis-benchmark, of the proxy (0
# direct) and of redis-server, as "rps/bench/proxy/redis".
run() {
  local proxy=${PROXY[$1]:-} r0 p0=0 r1 p1=0 t rps
  r0=$(cpu_ns "$REDIS_PID"); [ -n "$proxy" ] && p0=$(cpu_ns "$proxy")
  t=$( { TIMEFORMAT='%3U %3S'; time redis-benchmark -p "$1" -t "$2" -n "$N" -c "$C" -P "$3" -r 1000 \
    -d "$D" --csv 2>/dev/null >"$W/out.csv"; } 2>&1 )
  r1=$(cpu_ns "$REDIS_PID"); [ -n "$proxy" ] && p1=$(cpu_ns "$proxy")
  rps=$(awk -F, 'NR>1{gsub(/"/,"",$2); print $2; exit}' "$W/out.csv")
  awk -v rps="$rps" -v t="$t" -v p=$((p1 - p0)) -v r=$((r1 - r0)) -v n="$N" 'BEGIN{
    split(t, b, " "); printf "%s/%.2f/%.2f/%.2f", rps, (b[1] + b[2]) * 1e6 / n, p / 1e3 / n, r / 1e3 / n}'
}
declare -A R
for _ in $(seq "$ROUNDS"); do for t in set get; do for P in 1 16; do for port in 7101 7102 7103; do
  R[$t.$P.$port]+="$(run $port $t $P) "; done; done; done; done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1}END{print a[int((NR+1)/2)]}'; }
# Field F (1 rps, 2 bench, 3 proxy, 4 redis) of a case's runs, median.
field() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | cut -d/ -f"$2" | med; }
echo "redis-benchmark, $C clients, $D-byte values, $N requests per case, median of $ROUNDS rounds (requests/s)"
printf "| %-7s | %10s | %10s | %10s | %8s | %9s |\n" case direct twemproxy respite resp/dir resp/twem
printf "|---------|-----------:|-----------:|-----------:|---------:|----------:|\n"
for t in set get; do for P in 1 16; do
  d=$(field $t.$P.7101 1); w=$(field $t.$P.7102 1); p=$(field $t.$P.7103 1)
  printf "| %-7s | %10s | %10s | %10s | %8.2f | %9.2f |\n" "$t-P$P" "$d" "$w" "$p" \
    "$(awk -v a="$p" -v b="$d" 'BEGIN{print a/b}')" "$(awk -v a="$p" -v b="$w" 'BEGIN{print a/b}')"
done; done
echo
echo "CPU per request (microseconds, median of $ROUNDS rounds): the load generator, the proxy, redis-server"
printf "| %-7s | %-19s | %-26s | %-26s |\n" case "direct: bench/redis" "twemproxy: bench/nc/redis" "respite: bench/resp/redis"
printf "|---------|---------------------|----------------------------|----------------------------|\n"
for t in set get; do for P in 1 16; do
  printf "| %-7s | %8s / %-8s | %7s / %6s / %-7s | %7s / %6s / %-7s |\n" "$t-P$P" \
    "$(field $t.$P.7101 2)" "$(field $t.$P.7101 4)" \
    "$(field $t.$P.7102 2)" "$(field $t.$P.7102 3)" "$(field $t.$P.7102 4)" \
    "$(field $t.$P.7103 2)" "$(field $t.$P.7103 3)" "$(field $t.$P.7103 4)"
done; done

# The near cache: GETs of the 1,000 keys the SET runs wrote, served by a respite whose near cache
# covers every key, against the upstream direct in the same run; then a skewed key distribution.
cat > "$W/cached.toml" <<T
[listen]
tcp = "127.0.0.1:7106"
[upstream]
url = "redis://127.0.0.1:7101"
[admin]
listen = "127.0.0.1:7107"
[log]
level = "warn"
[near_cache]
enabled = true
[[near_cache.rule]]
pattern = "*"
T
./target/release/respite --config "$W/cached.toml" >>"$W/respite.log" 2>&1 &
PIDS+=($!); PROXY[7106]=$!
for _ in $(seq 100); do redis-cli -p 7106 ping >/dev/null 2>&1 && break; sleep 0.05; done
healthy 7107
for _ in $(seq 200); do
  curl -s localhost:7107/stats | grep -q '"tracking":2' && break; sleep 0.05
done
for P in 1 16; do run 7106 get $P >/dev/null; done # fill
for _ in $(seq "$ROUNDS"); do for P in 1 16; do for port in 7101 7106; do
  R[cached.$P.$port]+="$(run $port get $P) "; done; done; done
echo
echo "near cache: cached GETs, median of $ROUNDS rounds (requests/s; CPU microseconds per request)"
printf "| %-7s | %10s | %10s | %8s | %-19s | %-19s |\n" case direct cached cache/dir "direct: bench/redis" "cached: bench/resp"
printf "|---------|-----------:|-----------:|---------:|---------------------|---------------------|\n"
for P in 1 16; do
  d=$(field cached.$P.7101 1); p=$(field cached.$P.7106 1)
  printf "| %-7s | %10s | %10s | %8.2f | %8s / %-8s | %8s / %-8s |\n" "get-P$P" "$d" "$p" \
    "$(awk -v a="$p" -v b="$d" 'BEGIN{print a/b}')" "$(field cached.$P.7101 2)" "$(field cached.$P.7101 4)" \
    "$(field cached.$P.7106 2)" "$(field cached.$P.7106 3)"
done
curl -s localhost:7107/stats | python3 -c 'import json,sys; c=json.load(sys.stdin)["near_cache"]; print("hit ratio %.4f, %d entries" % (c["hit_ratio"], c["entries"]))'
python3 scripts/zipf.py 7106 7107 7101 10000 200000 1.0

# Idle clients against a fresh respite, so the figure is what the clients cost, not what the
# allocator kept from the throughput runs above.
./target/release/respite --listen 127.0.0.1:7105 --upstream redis://127.0.0.1:7101 --admin none \
  --log-level warn >>"$W/respite.log" 2>&1 &
IDLE_PID=$!; PIDS+=($IDLE_PID)
for _ in $(seq 100); do redis-cli -p 7105 ping >/dev/null 2>&1 && break; sleep 0.05; done
python3 scripts/idle_clients.py 7105 10000 "$IDLE_PID"
