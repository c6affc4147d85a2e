"""DBSIZE, FLUSHDB, KEYS, a whole SCAN and RANDOMKEY for a tenant beside other tenants' keys:
time and upstream round trips.

Run by scripts/tenant_costs.sh, which starts the server, makes others' keys with DEBUG POPULATE
(database 0) and then starts respite; each tenant's keys are a pipelined SET through respite.
Round trips are the upstream's own count of commands run (INFO commandstats) during the call,
less PINGs (respite's health probe and per-batch alignment markers) and the INFO call itself:
each command respite drives for a tenant waits for its reply before the next.
usage: tenant_costs.py PROXY_PORT SERVER_PORT OTHERS OWN
"""
import sys
import time

import redis

proxy_port, server_port, others, own = (int(a) for a in sys.argv[1:5])
direct = redis.Redis(port=server_port)


def calls():
    stats = direct.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_ping", "cmdstat_info"))


def fill(c, n):
    p = c.pipeline(transaction=False)
    for i in range(n):
        p.set(f"k{i}", "v")
    p.execute()


def scan_all(c):
    """A whole SCAN iteration as a client makes it (COUNT 10, the default): the keys seen, and
    the client's own calls."""
    cursor, seen, n = 0, set(), 0
    while True:
        cursor, keys = c.scan(cursor)
        seen.update(keys)
        n += 1
        if cursor == 0:
            return seen, n


def timed(c, *cmd):
    """Median wall time over 5 runs, and the median of upstream commands per run (a run that opens
    a connection also counts its handshake)."""
    times, trips = [], []
    for _ in range(5):
        if cmd[0] == "FLUSHDB":
            fill(c, own)
        before = calls()
        t = time.perf_counter()
        reply = scan_all(c) if cmd[0] == "SCAN" else c.execute_command(*cmd)
        times.append(time.perf_counter() - t)
        trips.append(calls() - before)
    times.sort()
    trips.sort()
    return times[2], trips[2], reply


others = direct.dbsize()
print(f"others: {others} keys in database 0; each tenant: {own} keys")
for user, pw, how in [("shared", "ps", "prefix in the shared database (SCAN walk)"),
                      ("own", "po", "database of its own (tenant.db)")]:
    c = redis.Redis(port=proxy_port, username=user, password=pw)
    fill(c, own)
    t, n, reply = timed(c, "DBSIZE")
    assert reply == own, reply
    print(f"{how}: DBSIZE {t * 1000:.2f} ms, {n} upstream commands")
    t, n, reply = timed(c, "KEYS", "*")
    assert len(reply) == own, len(reply)
    print(f"{how}: KEYS * {t * 1000:.2f} ms, {n} upstream commands")
    t, n, (seen, client_calls) = timed(c, "SCAN")
    assert len(seen) == own, len(seen)
    print(f"{how}: whole SCAN {t * 1000:.2f} ms, {client_calls} client calls, {n} upstream commands")
    t, n, reply = timed(c, "RANDOMKEY")
    assert reply is not None
    print(f"{how}: RANDOMKEY {t * 1000:.2f} ms, {n} upstream commands")
    t, n, reply = timed(c, "FLUSHDB")
    assert c.dbsize() == 0
    print(f"{how}: FLUSHDB {t * 1000:.2f} ms, {n} upstream commands")
assert direct.dbsize() == others, "others' keys were touched"

print(f"others' keys after: {direct.dbsize()}")
