#!/usr/bin/env python3
"""Import circles in src/: `use`/path edges between the files of each folder (siblings, with
re-exports in mod.rs followed to the file that defines the name), and between top-level
folders. Prints every strongly connected component of more than one node; exits 1 if any.

Test code (files named tests.rs, and everything after a `#[cfg(test)]`) is left out: tests may
reach anywhere. Usage: scripts/import_cycles.py [SRC_DIR]"""
import os, re, sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
SRC = os.path.normpath(SRC)

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)

files = {}
for d, _, fs in os.walk(SRC):
    for f in fs:
        if f.endswith(".rs") and f != "tests.rs":
            p = os.path.join(d, f)
            files[module_of(p)] = p
# main.rs is the binary's root, not a module of the library.
files.pop((), None)
files[()] = os.path.join(SRC, "lib.rs")

def code(path):
    s = open(path).read()
    cut = s.find("#[cfg(test)]")
    if cut >= 0:
        s = s[:cut]
    s = re.sub(r"//[^\n]*", "", s)
    s = re.sub(r'b?"(?:\\.|[^"\\])*"', '""', s)
    return s

def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (roughly; `self` kept as the prefix)."""
    tree = tree.strip()
    m = re.match(r"^([\w:]*?)(?:::)?\{(.*)\}$", tree, re.S)
    if not m:
        return [re.sub(r"\s+as\s+\w+$", "", tree)]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        for e in expand(p):
            if e == "self":
                out.append(prefix)
            else:
                out.append(prefix + "::" + e if prefix else e)
    return out

def paths(path):
    s = code(path)
    found = []
    for m in re.finditer(r"\b(?:pub(?:\([\w:]+\))?\s+)?use\s+([^;]+);", s):
        found.extend(expand(m.group(1)))
    found.extend(re.findall(r"\b(?:crate|super|self)(?:::\w+)+", s))
    return found

def resolve(mod, p):
    parts = p.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        # The module a file's `super` names: its parent (a mod.rs file is its folder's module).
        base = mod
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        rest = parts
    else:
        return None, []
    best = base
    for i in range(len(rest)):
        if base + tuple(rest[: i + 1]) in files:
            best = base + tuple(rest[: i + 1])
        else:
            return best, rest[i:]
    return best, []

# What each mod.rs re-exports: name -> the module that defines it.
reexports = {}
for mod, path in files.items():
    s = code(path)
    for m in re.finditer(r"\bpub(?:\([\w:]+\))?\s+use\s+([^;]+);", s):
        for e in expand(m.group(1)):
            name = re.split(r"\s+as\s+", e)[-1].split("::")[-1]
            target, _ = resolve(mod, e)
            if target is not None and target != mod:
                reexports[(mod, name)] = target

def target_of(mod, p):
    t, rest = resolve(mod, p)
    seen = set()
    while t is not None and rest and (t, rest[0]) in reexports and (t, rest[0]) not in seen:
        seen.add((t, rest[0]))
        t = reexports[(t, rest[0])]
        rest = rest[1:]
    return t

def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out

sibling, folder = {}, {}
for mod, path in files.items():
    for p in paths(path):
        t = target_of(mod, p)
        if t is None or t == mod:
            continue
        # Siblings: two files whose parent module is the same folder (mod.rs excluded).
        if len(mod) >= 1 and len(t) == len(mod) and t[:-1] == mod[:-1] and t in files:
            sibling.setdefault(mod, set()).add(t)
        if mod and t and mod[0] != t[0]:
            folder.setdefault(mod[0], set()).add(t[0])

bad = 0
for comp in sccs(sorted(files), sibling):
    bad += 1
    print("circle among siblings:", ", ".join("/".join(c) + ".rs" for c in comp))
    for a in comp:
        for b in sorted(sibling.get(a, ())):
            if b in comp:
                print("   ", "/".join(a), "->", "/".join(b))
for comp in sccs(sorted(folder), folder):
    bad += 1
    print("circle among top-level folders:", ", ".join(comp))
    for a in comp:
        print("   ", a, "->", ", ".join(b for b in sorted(folder[a]) if b in comp))
n_edges = sum(len(v) for v in sibling.values())
print(f"{len(files)} modules, {n_edges} sibling edges, {bad} circle(s)")
sys.exit(1 if bad else 0)
