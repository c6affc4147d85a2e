"""Slow readers against respite's memory bound (issue 24): N clients each pipeline 100 GETs of a
100 KB value and never read; meanwhile a checker client GETs a small value and its latency is
taken. Reports respite's RSS (from /proc) at start, at its peak while they run and after they
close, the checker's p50/p99 alone and beside them, and the clients respite closed for its limits.

usage: slow_readers.py PORT PID UPSTREAM_PORT [N] [SECONDS]
(scripts/slow_readers.sh starts the servers and runs this.)"""
import resource
import socket
import sys
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def checker_latencies(port, n):
    """n GETs of a small value, one at a time; their round trips in microseconds."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req, want = cmd("GET", "small"), b"$2\r\nok\r\n"
    took = []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(req)
        got = b""
        while len(got) < len(want):
            chunk = s.recv(64)
            if not chunk:
                raise SystemExit("checker: connection closed")
            got += chunk
        assert got == want, got
        took.append((time.perf_counter() - t) * 1e6)
    s.close()
    return sorted(took)


def pct(sorted_us, p):
    return sorted_us[min(len(sorted_us) - 1, len(sorted_us) * p // 100)]


def metric(admin_port, name):
    s = socket.create_connection(("127.0.0.1", admin_port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    port, pid, upstream = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 10
    admin = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
    up = socket.create_connection(("127.0.0.1", upstream))
    up.sendall(cmd("SET", "big", b"v" * 100_000) + cmd("SET", "small", "ok"))
    time.sleep(0.2)
    up.close()
    checker_latencies(port, 200)  # warm
    alone = checker_latencies(port, 2000)
    start = rss_kib(pid)
    peak = [start]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    batch = cmd("GET", "big") * 100
    slow = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        try:
            s.send(batch)
        except BlockingIOError:
            pass
        slow.append(s)
    beside = checker_latencies(port, 2000)
    time.sleep(seconds)
    during = rss_kib(pid)
    stop.set()
    sampler.join()
    closed = metric(admin, "respite_clients_closed_for_memory_total") if admin else float("nan")
    for s in slow:
        s.close()
    time.sleep(3)
    after = rss_kib(pid)
    print(f"slow readers: {n} x 100 GETs of 100 KB, never read")
    print(f"respite RSS: {start / 1024:.1f} MiB at start, peak {peak[0] / 1024:.1f} MiB, "
          f"{during / 1024:.1f} MiB after {seconds:.0f} s, {after / 1024:.1f} MiB 3 s after they closed")
    print(f"checker GET: p50/p99/max {pct(alone, 50):.0f}/{pct(alone, 99):.0f}/{alone[-1]:.0f} us alone, "
          f"{pct(beside, 50):.0f}/{pct(beside, 99):.0f}/{beside[-1]:.0f} us beside them")
    print(f"clients closed for memory: {closed:.0f}")


main()
