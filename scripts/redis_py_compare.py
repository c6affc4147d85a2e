#!/usr/bin/env python3
"""Compares two pytest junit XML reports of the same suite (direct, through respite): pass counts,
and every test that passes in the first and not in the second, with the first line of its failure.
usage: redis_py_compare.py DIRECT.xml RESPITE.xml"""
import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            text = (bad.get("message") or bad.text or "").strip().splitlines()
            result[name] = ("fail", text[0][:160] if text else "")
        elif case.find("skipped") is not None:
            result[name] = ("skip", "")
        else:
            result[name] = ("pass", "")
    return result


direct, respite = outcomes(sys.argv[1]), outcomes(sys.argv[2])
passed = {n for n, (o, _) in direct.items() if o == "pass"}
both = {n for n in passed if respite.get(n, ("missing", ""))[0] == "pass"}
print(f"direct: {len(passed)} passed of {len(direct)}")
print(f"respite: {sum(1 for o, _ in respite.values() if o == 'pass')} passed of {len(respite)}; "
      f"{len(both)} of the {len(passed)} direct passes ({100 * len(both) / max(len(passed), 1):.1f}%)")
for name in sorted(passed - both):
    outcome, why = respite.get(name, ("missing", ""))
    print(f"  {outcome}: {name}: {why}")
