#!/usr/bin/env python3
"""Compares two folders of Redis Tcl suite logs, one file per unit (direct, through respite), as
written by redis_tcl_suite.sh: pass counts, their ratio, units that hung, and every test that passes
in the first and not in the second, with the first line of its failure (or "not run").
Tests are named by unit and name; a name repeated within a unit is numbered by occurrence.
usage: redis_tcl_compare.py DIRECT_DIR RESPITE_DIR"""
import os
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
OK = re.compile(r"^\[ok\]: (.*) \(\d+ ms\)$")
ERR = re.compile(r"^\[err\]: (.*) in tests/\S+\.tcl$")


def outcomes(folder):
    """unit -> ({test: (outcome, detail)}, hung, in_progress)"""
    units = {}
    for name in sorted(os.listdir(folder)):
        unit = name[:-4].replace("_", "/")
        lines = [ANSI.sub("", line.rstrip("\n")) for line in open(os.path.join(folder, name), errors="replace")]
        tests, seen = {}, {}
        hung = any(l.startswith("[hung]") or "[TIMEOUT]" in l for l in lines)
        progress = ""
        for i, line in enumerate(lines):
            m, outcome = OK.match(line), "pass"
            if not m:
                m, outcome = ERR.match(line), "fail"
            if not m:
                if "(IN PROGRESS)" in line:
                    progress = line.split("(IN PROGRESS)", 1)[1].strip()
                continue
            test = m.group(1)
            seen[test] = seen.get(test, 0) + 1
            key = test if seen[test] == 1 else f"{test} #{seen[test]}"
            detail = lines[i + 1].strip() if outcome == "fail" and i + 1 < len(lines) else ""
            tests[key] = (outcome, detail[:200])
        units[unit] = (tests, hung, progress)
    return units


direct, respite = outcomes(sys.argv[1]), outcomes(sys.argv[2])
d_pass = r_pass = both = 0
lost = []
for unit, (tests, hung, _) in direct.items():
    r_tests, r_hung, r_progress = respite.get(unit, ({}, False, ""))
    for test, (outcome, _) in tests.items():
        if outcome != "pass":
            continue
        d_pass += 1
        r_outcome, detail = r_tests.get(test, ("missing", ""))
        if r_outcome == "pass":
            both += 1
        else:
            if r_outcome == "missing":
                detail = f"not run (unit hung in: {r_progress})" if r_hung else "not run"
            lost.append(f"{unit}: {test}: {detail}")
r_pass = sum(1 for t, _, _ in respite.values() for o, _ in t.values() if o == "pass")
print(f"direct: {d_pass} passed")
print(f"respite: {r_pass} passed, {both} of them also direct ({100.0 * both / max(d_pass, 1):.1f}% of direct)")
for name, units in (("direct", direct), ("respite", respite)):
    for unit, (_, hung, progress) in units.items():
        if hung:
            print(f"hung {name}: {unit} (in: {progress or '?'})")
print(f"pass direct, not through respite: {len(lost)}")
for line in lost:
    print("  " + line)
