"""Driver for scripts/replay_costs.sh: freeze the upstream, write N SETs of 64 bytes through respite
in local-only mode (pipelined, 1,000 a round trip), read respite's RSS, resume the upstream, and time
the recovery. Prints one line of numbers."""
import json, os, signal, socket, sys, time, urllib.request

n, mode, respite, redis, port, admin, upstream_port, log = sys.argv[1:9]
n, respite, redis = int(n), int(respite), int(redis)


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def state():
    # None until the admin port listens (the script's readiness wait may end first).
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats") as r:
            return json.load(r)["upstream"]["health"]["state"]
    except OSError:
        return None


def wait(cond, limit=30):
    end = time.time() + limit
    while time.time() < end:
        if cond():
            return
        time.sleep(0.01)
    raise SystemExit("timed out")


def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, p):
        self.s = socket.create_connection(("127.0.0.1", int(p)))
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.s.recv(1 << 16)
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def reply(self):
        l = self.line()
        if l[:1] == b"$" and l != b"$-1":
            k = int(l[1:])
            while len(self.buf) < k + 2:
                self.buf += self.s.recv(1 << 16)
            v, self.buf = self.buf[:k], self.buf[k + 2:]
            return v
        return l


wait(lambda: state() == "healthy")
c = Conn(port)
c.s.sendall(cmd("SET", "marker", "up"))
assert c.reply() == b"+OK"
os.kill(redis, signal.SIGSTOP)
wait(lambda: state() == "down")
before = rss_kib(respite)
value = b"v" * 64
for start in range(0, n, 1000):
    c.s.sendall(b"".join(cmd("SET", "key:%d" % i, value) for i in range(start, min(n, start + 1000))))
    for _ in range(start, min(n, start + 1000)):
        r = c.reply()
        assert r == b"+OK", r
after = rss_kib(respite)
g = Conn(port)
resumed = time.time()
os.kill(redis, signal.SIGCONT)
while True:
    g.s.sendall(cmd("GET", "marker"))
    if g.reply() == b"up":
        break
forwarded = time.time() - resumed
held = None
for _ in range(100):
    for line in open(log):
        if "held" in line:
            held = json.loads(line)["fields"]["held"]
    if held or mode != "replay":
        break
    time.sleep(0.05)
u = Conn(upstream_port)
u.s.sendall(cmd("DBSIZE"))
print(f"{mode:6} N={n:6}: RSS +{(after - before) / 1024:.1f} MiB ({(after - before) * 1024 / n:.0f} B/write); "
      f"first forwarded reply {forwarded * 1000:.0f} ms after SIGCONT; replay held forwarding {held}; upstream DBSIZE {u.reply().decode()}")
