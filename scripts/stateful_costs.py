"""What stateful clients cost (issue 11's closing numbers), measured against a running respite and
its upstream: upstream connections (the upstream's CLIENT LIST) and respite's RSS for N subscribers
of one channel and for B clients blocked in BLPOP, the message rate to the N subscribers (messages
delivered per second, all subscribers together), and what the client past `upstream.max_pinned`
gets. Run by scripts/stateful_costs.sh, which starts both.
usage: stateful_costs.py RESPITE_PORT UPSTREAM_PORT RESPITE_PID [SUBSCRIBERS] [BLOCKED] [MESSAGES]"""
import resource
import selectors
import socket
import sys
import time

port, upstream_port, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
subscribers = int(sys.argv[4]) if len(sys.argv) > 4 else 10_000
blocked = int(sys.argv[5]) if len(sys.argv) > 5 else 1_000
messages = int(sys.argv[6]) if len(sys.argv) > 6 else 100

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, subscribers + blocked + 200)), hard))


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


def command(s, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)


def read_reply(s):
    """One reply, read naively (small replies only)."""
    buf = b""
    while b"\r\n" not in buf:
        buf += s.recv(65536)
    if buf[:1] == b"$":
        n = int(buf[1:buf.index(b"\r\n")])
        while len(buf) < buf.index(b"\r\n") + 2 + n + 2:
            buf += s.recv(65536)
    return buf


def upstream(*args):
    s = socket.create_connection(("127.0.0.1", upstream_port))
    command(s, *args)
    r = read_reply(s)
    s.close()
    return r


def upstream_connections():
    text = upstream("CLIENT", "LIST").decode(errors="replace")
    lines = [l for l in text.split("\n") if l.startswith("id=") or "id=" in l[:12]]
    names = {}
    for l in lines:
        name = l.split(" name=")[1].split(" ")[0] if " name=" in l else ""
        names[name or "(none)"] = names.get(name or "(none)", 0) + 1
    # Less the connection that asked.
    names["(none)"] = names.get("(none)", 1) - 1
    return sum(names.values()), {k: v for k, v in names.items() if v}


def info_field(field):
    text = upstream("INFO", "clients").decode()
    return int(text.split(field + ":")[1].split("\r\n")[0])


def connect_many(n, request):
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        conns.append(s)
    return conns


def drain(conns, expect_each, deadline_s):
    """Read until each connection has given `expect_each` bytes; returns the seconds it took."""
    sel = selectors.DefaultSelector()
    left = {}
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        left[s] = expect_each
    start = time.monotonic()
    pending = len(conns)
    while pending:
        if time.monotonic() - start > deadline_s:
            raise SystemExit(f"timed out: {pending} connections still owed bytes")
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            data = s.recv(1 << 20)
            if not data:
                raise SystemExit("respite closed a subscriber")
            left[s] -= len(data)
            if left[s] <= 0:
                sel.unregister(s)
                pending -= 1
    sel.close()
    return time.monotonic() - start


base_conns, base_names = upstream_connections()
base_rss = rss_mib()
print(f"baseline: respite RSS {base_rss:.1f} MiB, upstream connections {base_conns} {base_names}")

# 1. N subscribers of one channel (0: skip to the blocked clients, measured on their own).
if subscribers == 0:
    subscribers_section = False
else:
    subscribers_section = True
def subscribers_and_rate():
    subs = connect_many(subscribers, b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
    confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    drain(subs, len(confirm), 120)
    conns, names = upstream_connections()
    numsub = upstream("PUBSUB", "NUMSUB", "news").split(b"\r\n")[-2].decode()
    print(f"{subscribers} subscribers of one channel: respite RSS {rss_mib():.1f} MiB "
          f"(+{rss_mib() - base_rss:.1f}), upstream connections {conns} {names}, "
          f"upstream PUBSUB NUMSUB news: {numsub}")

    # 2. The message rate to them: `messages` PUBLISHes pipelined by one client; timed from the first
    # PUBLISH sent to the last subscriber having every message.
    payload = b"x" * 16
    frame = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$%d\r\n%s\r\n" % (len(payload), payload)
    pub = socket.create_connection(("127.0.0.1", port))
    batch = (b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$%d\r\n%s\r\n" % (len(payload), payload)) * messages
    start = time.monotonic()
    pub.sendall(batch)
    took = drain(subs, len(frame) * messages, 600)
    took = max(took, time.monotonic() - start)
    total = subscribers * messages
    print(f"message rate: {messages} messages to {subscribers} subscribers = {total} deliveries "
          f"in {took:.2f} s: {total / took:,.0f} messages/s delivered (respite RSS {rss_mib():.1f} MiB)")
    pub.close()
    for s in subs:
        s.close()
    time.sleep(1)



if subscribers_section:
    subscribers_and_rate()

# 3. B clients blocked in BLPOP, each on a pinned connection of its own.
before_conns, _ = upstream_connections()
before_rss = rss_mib()
waiters = []
for i in range(blocked):
    s = socket.create_connection(("127.0.0.1", port))
    command(s, "BLPOP", f"q{i}", 0)
    waiters.append(s)
start = time.monotonic()
while info_field("blocked_clients") < blocked:
    if time.monotonic() - start > 120:
        raise SystemExit(f"only {info_field('blocked_clients')} blocked")
    time.sleep(0.05)
conns, names = upstream_connections()
print(f"{blocked} clients blocked in BLPOP: respite RSS {rss_mib():.1f} MiB "
      f"(+{rss_mib() - before_rss:.1f}), upstream connections {conns} {names}")

# 4. Past upstream.max_pinned: what the next blocking clients get.
extra = []
refusals = {}
for i in range(40):
    s = socket.create_connection(("127.0.0.1", port))
    command(s, "BLPOP", f"x{i}", 0)
    extra.append(s)
time.sleep(1)
for s in extra:
    s.setblocking(False)
    try:
        r = s.recv(4096)
        refusals[r.decode().strip()] = refusals.get(r.decode().strip(), 0) + 1
    except BlockingIOError:
        refusals["(blocked)"] = refusals.get("(blocked)", 0) + 1
print(f"40 more blocking clients: {refusals}")
for s in waiters + extra:
    s.close()
start = time.monotonic()
while info_field("blocked_clients") > 0 and time.monotonic() - start < 30:
    time.sleep(0.05)
print(f"all closed: upstream blocked clients {info_field('blocked_clients')}, "
      f"upstream connections {upstream_connections()[0]}, respite RSS {rss_mib():.1f} MiB")
