#!/usr/bin/env bash
# Throughput through respite vs redis-benchmark --cluster direct, against a loopback cluster of
# PRIMARIES primaries (3 by default, or 1: one node holding every slot; no replicas). Processes
# started here are killed by PID at the end.
set -u
# Usage: [BIN=path/to/release/respite] [N=requests] [PRIMARIES=3|1] [PIPELINES="1 16"]
#        scripts/cluster_bench.sh
BIN=$(realpath "${BIN:-$(dirname "$0")/../target/release/respite}")
WORK=$(mktemp -d)
cd "$WORK"
PORTS=(17101 17102 17103)
[ "${PRIMARIES:-3}" = 1 ] && PORTS=(17101)
PIDS=()
for p in "${PORTS[@]}"; do
  rm -rf n$p; mkdir n$p
  (cd n$p && exec redis-server --port $p --cluster-enabled yes --cluster-config-file nodes.conf --save '' --appendonly no --daemonize no --logfile log) &
  PIDS+=($!)
done
sleep 1
if [ ${#PORTS[@]} = 1 ]; then
  # redis-cli --cluster create wants three primaries: one node takes every slot itself.
  redis-cli -p 17101 cluster addslotsrange 0 16383 >/dev/null
else
  redis-cli --cluster create 127.0.0.1:17101 127.0.0.1:17102 127.0.0.1:17103 --cluster-replicas 0 --cluster-yes >/dev/null
fi
for i in $(seq 1 50); do redis-cli -p 17101 cluster info | grep -q cluster_state:ok && break; sleep 0.2; done
$BIN --listen 127.0.0.1:17199 --upstream redis+cluster://127.0.0.1:17101 --admin none --log-level warn &
RPID=$!
sleep 2
kill -0 $RPID || { echo "respite did not start"; kill "${PIDS[@]}"; exit 1; }
redis-cli -p 17199 set warm 1 >/dev/null
N=${N:-200000}
for round in 1 2; do
  for P in ${PIPELINES:-1 16}; do
    for t in get set; do
      d=$(timeout 90 redis-benchmark --cluster -h 127.0.0.1 -p 17101 -t $t -n $N -c 50 -P $P -r 100000 -q 2>/dev/null | grep -i "$t" | tail -1)
      r=$(timeout 90 redis-benchmark -h 127.0.0.1 -p 17199 -t $t -n $N -c 50 -P $P -r 100000 -q 2>/dev/null | grep -i "$t" | tail -1)
      echo "primaries ${#PORTS[@]} round $round P=$P $t | direct: $d | respite: $r"
    done
  done
done
kill $RPID; for p in "${PIDS[@]}"; do kill $p; done
wait 2>/dev/null
