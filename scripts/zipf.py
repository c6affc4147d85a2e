"""Near-cache hit ratio and upstream reads saved for a skewed (Zipf-like) key distribution.

usage: zipf.py RESPITE_PORT ADMIN_PORT UPSTREAM_PORT [KEYS] [READS] [S]
Writes KEYS keys of 64 bytes directly on the upstream, then reads READS keys through respite,
drawn with probability proportional to 1/rank^S, in pipelined batches of 100; reports the hit
ratio (respite's /stats) and how many upstream GETs the reads cost (INFO commandstats)."""
import bisect
import json
import random
import sys
import urllib.request

import redis

port, admin, upstream = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
keys = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
reads = int(sys.argv[5]) if len(sys.argv) > 5 else 200_000
s = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0

direct = redis.Redis(port=upstream)
proxy = redis.Redis(port=port)


def stats():
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats") as r:
        return json.load(r)["near_cache"]


def upstream_gets():
    return direct.info("commandstats").get("cmdstat_get", {}).get("calls", 0)


pipe = direct.pipeline(transaction=False)
for i in range(keys):
    pipe.set(f"zipf:{i}", "v" * 64)
pipe.execute()
weights = [1.0 / (rank + 1) ** s for rank in range(keys)]
cumulative = []
total = 0.0
for w in weights:
    total += w
    cumulative.append(total)
rng = random.Random(42)
before, gets_before = stats(), upstream_gets()
for start in range(0, reads, 100):
    pipe = proxy.pipeline(transaction=False)
    for _ in range(100):
        pipe.get(f"zipf:{bisect.bisect_left(cumulative, rng.random() * total)}")
    pipe.execute()
after, gets = stats(), upstream_gets() - gets_before
hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
print(
    f"Zipf s={s} over {keys} keys, {reads} GETs through respite: hit ratio {hits / (hits + misses):.3f}, "
    f"upstream GETs {gets} ({100 * (1 - gets / reads):.1f}% of reads saved), "
    f"{after['entries']} entries, {after['bytes']} bytes"
)
