"""Open N idle client connections to respite (each sends one PING first, so the session exists),
then report respite's resident memory. usage: idle_clients.py PORT N PID"""
import resource
import socket
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
before = rss_kib(pid)
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"PING\r\n")
    conns.append(s)
for s in conns:
    assert s.recv(16) == b"+PONG\r\n"
after = rss_kib(pid)
print(f"idle clients: {n}; respite RSS {before} KiB before, {after} KiB with them open "
      f"({(after - before) / n:.2f} KiB per idle client, {after / 1024:.1f} MiB total)")
for s in conns:
    s.close()
