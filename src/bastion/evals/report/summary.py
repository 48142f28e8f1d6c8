"""The summary printed after a run: one row per variant, the comparisons and the gate verdict."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:.6f}"


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_summary(doc: dict[str, Any]) -> str:
    rows = []
    for v in doc["variants"]:
        q = v["quality"]
        rows.append([
            v["name"] + (" (baseline)" if v["name"] == doc["baseline"] else ""), _pct(v["pass_rate"]),
            f"{_pct(v['ci'][0])}..{_pct(v['ci'][1])}", f"{v['passes']}/{v['fails']}/{v['errors']}",
            str(len(v["flaky_cases"])), _pct(q["format_compliance"]["value"]), _pct(q["task_accuracy"]["value"]),
            _pct(q["refusal_rate"]["value"]), _pct(q["hallucination_rate"]["value"]), _ms(q["latency_p50_ms"]),
            _ms(q["latency_p95_ms"]), _usd(q["cost_per_case_usd"]),
        ])
    ci = f"{round(100 * doc['variants'][0]['confidence'])}% CI" if doc["variants"] else "CI"
    header = ["variant", "pass", ci, "pass/fail/err", "flaky", "format", "accuracy", "refusal", "halluc.", "p50 ms",
              "p95 ms", "cost/case"]
    out = [f"suite {doc['suite']['name']}: {len(doc['cases'])} cases x {doc['samples']} samples, run {doc['run_id']}", "",
           *_table(rows, header), ""]
    for c in doc["gate"]["checks"]:
        out.append(f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']:<16} {c['variant']}: {c['detail']}")
    out.append("")
    out.append("gate: PASSED" if doc["gate"]["passed"] else "gate: FAILED")
    return "\n".join(out)
