"""A realistic redis-py workload, printed as one JSON line per reply.

usage: workload.py PORT PROTOCOL(2|3)
The test runs it against the upstream directly and through respite and compares the output.
"""
import json
import sys

import redis


def norm(v):
    """A JSON-able, order-stable rendering of a redis-py reply."""
    if isinstance(v, bytes):
        return {"b": v.decode("latin-1")}
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, set):
        return sorted((norm(x) for x in v), key=json.dumps)
    if isinstance(v, dict):
        return sorted(([norm(k), norm(x)] for k, x in v.items()), key=json.dumps)
    if isinstance(v, Exception):
        return {"error": type(v).__name__, "msg": str(v)}
    return v


def main():
    port, proto = int(sys.argv[1]), int(sys.argv[2])
    r = redis.Redis(host="127.0.0.1", port=port, protocol=proto, socket_timeout=10)
    out = []

    def do(fn, *a, **kw):
        try:
            out.append(norm(fn(*a, **kw)))
        except redis.ResponseError as e:
            out.append(norm(e))

    do(r.ping)
    do(r.set, "user:1:name", "ada")
    do(r.get, "user:1:name")
    do(r.set, "session:1", "x", ex=1000)
    do(r.ttl, "session:1")
    do(r.set, "lock:job", "owner-1", nx=True, px=100000)
    do(r.set, "lock:job", "owner-2", nx=True, px=100000)
    do(r.incr, "rate:ip:1")
    do(r.expire, "rate:ip:1", 60)
    do(r.incrby, "rate:ip:1", 5)
    do(r.mset, {"a": "1", "b": "2"})
    do(r.mget, "a", "b", "missing")
    do(r.hset, "user:1", mapping={"name": "ada", "lang": "en"})
    do(r.hgetall, "user:1")
    do(r.hincrby, "user:1", "visits", 3)
    do(r.rpush, "queue", "j1", "j2", "j3")
    do(r.lrange, "queue", 0, -1)
    do(r.lpop, "queue")
    do(r.sadd, "tags", "a", "b", "c")
    do(r.smembers, "tags")
    do(r.zadd, "board", {"alice": 30, "bob": 20, "carol": 25})
    do(r.zrevrange, "board", 0, 2, withscores=True)
    do(r.zincrby, "board", 15, "bob")
    do(r.zrank, "board", "bob")
    do(r.zscore, "board", "bob")
    do(r.xadd, "events", {"k": "v"}, id="1-1")
    do(r.xrange, "events")
    do(r.xlen, "events")
    do(r.get, "user:1")  # WRONGTYPE
    do(r.execute_command, "NOSUCHCOMMAND")
    do(sorted, r.scan_iter(match="user:*"))
    with r.pipeline(transaction=False) as p:
        for i in range(50):
            p.set(f"pipe:{i}", i)
            p.get(f"pipe:{i}")
        do(p.execute)
    do(r.dbsize)
    do(r.delete, "a", "b", "missing")
    do(r.exists, "a", "user:1")
    print("\n".join(json.dumps(x, sort_keys=True) for x in out))


if __name__ == "__main__":
    main()
