"""JUnit XML: one testsuite per variant, one testcase per case (failed when any sample failed or errored),
and a ``gate`` testsuite with one testcase per gate check."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET


def _case_element(parent: ET.Element, classname: str, case: dict[str, Any], row: dict[str, Any]) -> None:
    tc = ET.SubElement(parent, "testcase", name=case["id"], classname=classname,
                       time=f"{sum((s['latency_ms'] or 0) for s in row['samples']) / 1000:.3f}")
    summary = f"{row['passes']}/{row['n']} samples passed" + (" (flaky)" if row["flaky"] else "")
    lines = [f"sample {s['index']}: {s['outcome']}: " + (s.get("error") or "; ".join(
        f"{c['type']}: {c.get('message', '')}" for c in s["checks"] if c["outcome"] != "pass")) for s in row["samples"]
        if s["outcome"] != "pass"]
    if row["fails"]:
        ET.SubElement(tc, "failure", message=summary, type="assertion").text = "\n".join(lines)
    elif row["errors"]:
        ET.SubElement(tc, "error", message=summary, type="error").text = "\n".join(lines)
    ET.SubElement(tc, "system-out").text = summary


def render_junit(doc: dict[str, Any]) -> str:
    root = ET.Element("testsuites", name=f"bastion eval {doc['suite']['name']}")
    suite_name = doc["suite"]["name"]
    for v in doc["variants"]:
        rows = [(c, c["variants"][v["name"]]) for c in doc["cases"]]
        ts = ET.SubElement(root, "testsuite", name=f"{suite_name}.{v['name']}", tests=str(len(rows)),
                           failures=str(sum(1 for _, r in rows if r["fails"])),
                           errors=str(sum(1 for _, r in rows if r["errors"] and not r["fails"])), skipped="0")
        props = ET.SubElement(ts, "properties")
        for k in ("pass_rate", "passes", "fails", "errors"):
            ET.SubElement(props, "property", name=k, value=str(v[k]))
        ET.SubElement(props, "property", name="ci", value=f"{v['ci'][0]:.4f}..{v['ci'][1]:.4f}")
        for c, r in rows:
            _case_element(ts, f"{suite_name}.{v['name']}", c, r)
    checks = doc["gate"]["checks"]
    gs = ET.SubElement(root, "testsuite", name=f"{suite_name}.gate", tests=str(len(checks)),
                       failures=str(sum(1 for c in checks if not c["passed"])), errors="0", skipped="0")
    for c in checks:
        tc = ET.SubElement(gs, "testcase", name=f"{c['name']}[{c['variant']}]", classname=f"{suite_name}.gate")
        if not c["passed"]:
            ET.SubElement(tc, "failure", message=c["detail"], type="gate")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
