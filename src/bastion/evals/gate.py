"""The gate: thresholds on each variant and paired regression checks against the baseline.

A check fails when
- every sample of a variant errored (nothing was measured),
- a variant's pass rate is below ``min_pass_rate``,
- the Wilson lower bound of its pass rate is below ``min_lower_bound``,
- against the baseline variant (and, with ``--baseline RUN.json``, against the same variant in that run):
  the drop in per-case pass rate is significant (two-sided sign-flip test, p < alpha) AND its mean is larger
  than ``max_regression``. Improvements and insignificant or small changes pass.
"""

from __future__ import annotations

from typing import Any

from . import stats
from .model import Gate


def case_rates(doc: dict[str, Any], variant: str) -> dict[str, float]:
    """Per-case pass rates of ``variant`` in a results document (empty if it is not there)."""
    out = {}
    for c in doc.get("cases", []):
        v = c.get("variants", {}).get(variant)
        if v and v.get("n"):
            out[c["id"]] = v["passes"] / v["n"]
    return out


def _check(name: str, variant: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "variant": variant, "passed": passed, "detail": detail}


def _regression_check(cmp: stats.Comparison, gate: Gate, against: str, label: str) -> dict[str, Any]:
    verdict = "regression" if cmp.regression(gate.max_regression) else (
        "significant change" if cmp.significant else "no significant change")
    detail = (f"{label} {against}: mean difference {cmp.mean_diff:+.3f} "
              f"(95% CI {cmp.ci[0]:+.3f}..{cmp.ci[1]:+.3f}), p={cmp.p_value:.3g} ({cmp.method}, "
              f"{cmp.nonzero}/{cmp.n_pairs} cases differ), alpha={gate.alpha}, max drop {gate.max_regression}: {verdict}")
    return _check("max_regression", cmp.candidate, not cmp.regression(gate.max_regression), detail)


def evaluate_gate(doc: dict[str, Any], gate: Gate, baseline: str, baseline_doc: dict[str, Any] | None
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(comparisons, gate section) for a results document."""
    checks: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for v in doc["variants"]:
        name = v["name"]
        if v["total"] and v["errors"] == v["total"]:
            first = next((s["error"] for c in doc["cases"] for s in c["variants"][name]["samples"] if s.get("error")),
                         "assertion errors")
            checks.append(_check("answers", name, False, f"all {v['total']} samples errored, e.g. {first}"))
        if gate.min_pass_rate is not None:
            ok = v["pass_rate"] >= gate.min_pass_rate
            checks.append(_check("min_pass_rate", name, ok, f"pass rate {v['pass_rate']:.3f} "
                                 f"{'>=' if ok else '<'} {gate.min_pass_rate}"))
        if gate.min_lower_bound is not None:
            lo = v["ci"][0]
            ok = lo >= gate.min_lower_bound
            checks.append(_check("min_lower_bound", name, ok, f"Wilson lower bound {lo:.3f} "
                                 f"{'>=' if ok else '<'} {gate.min_lower_bound}"))
    base_rates = case_rates(doc, baseline)
    for v in doc["variants"]:
        if v["name"] == baseline:
            continue
        cmp = stats.compare_paired(base_rates, case_rates(doc, v["name"]), alpha=gate.alpha,
                                   names=(baseline, v["name"]))
        comparisons.append({"against": "variant", **cmp.as_dict(gate.max_regression)})
        checks.append(_regression_check(cmp, gate, baseline, "vs variant"))
    if baseline_doc is not None:
        for v in doc["variants"]:
            old = case_rates(baseline_doc, v["name"])
            if not old:
                continue
            cmp = stats.compare_paired(old, case_rates(doc, v["name"]), alpha=gate.alpha,
                                       names=(f"{v['name']}@{baseline_doc.get('run_id', 'baseline run')}", v["name"]))
            comparisons.append({"against": "baseline-run", "baseline_run": baseline_doc.get("run_id"),
                                **cmp.as_dict(gate.max_regression)})
            checks.append(_regression_check(cmp, gate, f"run {baseline_doc.get('run_id')}", "vs"))
    section = {"passed": all(c["passed"] for c in checks), "checks": checks,
               "config": {"min_pass_rate": gate.min_pass_rate, "min_lower_bound": gate.min_lower_bound,
                          "max_regression": gate.max_regression, "alpha": gate.alpha, "baseline": baseline,
                          "confidence": gate.confidence}}
    return comparisons, section
