"""Turn a Run into the results document (results.json): per variant, per case, per sample; plus the gate."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from . import stats
from .gate import case_rates, evaluate_gate
from .model import Outcome
from .quality import quality
from .runner import Run, Sample

FORMAT_VERSION = 1
__all__ = ["case_rates", "load_results", "summarize"]


def pass_ks(samples: int) -> list[int]:
    """The k reported for pass@k and pass^k: 1, 3 (when there are more samples) and the sample count."""
    return sorted({k for k in (1, 3, samples) if 1 <= k <= samples})


def _sample_dict(s: Sample) -> dict[str, Any]:
    a = s.answer
    out: dict[str, Any] = {"index": s.index, "outcome": s.outcome.value, "output": a.text, "status": a.status,
                           "latency_ms": a.latency_ms, "request_id": a.request_id, "cost_usd": a.cost_usd,
                           "checks": [c.as_dict() for c in s.checks]}
    if a.error:
        out["error"] = a.error
    return out


def _case_variant(samples: list[Sample]) -> dict[str, Any]:
    n = len(samples)
    c = Counter(s.outcome for s in samples)
    passes = c[Outcome.PASS]
    ms = [s.answer.latency_ms for s in samples if s.answer.latency_ms is not None and not s.answer.error]
    return {"n": n, "passes": passes, "fails": c[Outcome.FAIL], "errors": c[Outcome.ERROR],
            "pass_rate": passes / n if n else 0.0, "flaky": stats.is_flaky(passes, n),
            "latency_p50_ms": stats.percentile(ms, 50), "samples": [_sample_dict(s) for s in samples]}


def _variant_summary(run: Run, name: str, cases: list[dict[str, Any]], use_embeddings: bool | None) -> dict[str, Any]:
    rows = [c["variants"][name] for c in cases]
    total = sum(r["n"] for r in rows)
    passes = sum(r["passes"] for r in rows)
    z = stats.z_for(run.suite.gate.confidence)
    lo, hi, n_eff, icc = stats.clustered_wilson([(r["passes"], r["n"]) for r in rows], z)
    breakdown: dict[str, dict[str, int]] = {}
    for (variant, _), samples in run.records.items():
        if variant != name:
            continue
        for s in samples:
            for chk in s.checks:
                breakdown.setdefault(chk.type, {"pass": 0, "fail": 0, "error": 0})[chk.outcome.value] += 1
    ks = pass_ks(run.samples)
    full = [r for r in rows if r["n"] >= max(ks)]
    return {
        "name": name, "spec": run.suite.variant(name).as_dict(), "total": total, "passes": passes,
        "fails": sum(r["fails"] for r in rows), "errors": sum(r["errors"] for r in rows),
        "sample_errors": sum(1 for r in rows for s in r["samples"] if s.get("error")),
        "pass_rate": passes / total if total else 0.0, "ci": [lo, hi], "confidence": run.suite.gate.confidence,
        "ci_effective_n": round(n_eff, 2), "case_icc": round(icc, 4),
        "pass_at_k": {str(k): _mean(stats.pass_at_k(r["n"], r["passes"], k) for r in full) for k in ks},
        "pass_hat_k": {str(k): _mean(stats.pass_hat_k(r["n"], r["passes"], k) for r in full) for k in ks},
        "flaky_cases": [c["id"] for c in cases if c["variants"][name]["flaky"]],
        "cases_all_pass": sum(1 for r in rows if r["n"] and r["passes"] == r["n"]),
        "assertions": breakdown,
        "quality": quality(run, name, use_embeddings=use_embeddings),
    }


def _mean(values: Any) -> float | None:
    xs = list(values)
    return sum(xs) / len(xs) if xs else None


def summarize(run: Run, *, baseline_doc: dict[str, Any] | None = None,
              use_embeddings: bool | None = None) -> dict[str, Any]:
    """The results document. ``baseline_doc``: a previous results.json to compare against."""
    names = [v.name for v in run.variants]
    cases = []
    for c in run.suite.cases:
        row: dict[str, Any] = {"id": c.id, "where": c.where}
        if c.reference is not None:
            row["reference"] = c.reference
        row["variants"] = {n: _case_variant(run.samples_of(n, c.id)) for n in names}
        cases.append(row)
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "run_id": run.id,
        "suite": {"name": run.suite.name, "path": str(run.suite.path), "description": run.suite.description},
        "started_at": run.started_at, "finished_at": run.finished_at,
        "duration_s": round(run.finished_at - run.started_at, 3), "gateway": run.gateway,
        "samples": run.samples, "concurrency": run.concurrency, "baseline": run.suite.baseline,
        "variants": [_variant_summary(run, n, cases, use_embeddings) for n in names],
        "cases": cases,
    }
    doc["comparisons"], doc["gate"] = evaluate_gate(doc, run.suite.gate, run.suite.baseline, baseline_doc)
    return doc


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot read a results.json ({e})") from None
    if not isinstance(doc, dict) or "cases" not in doc or "variants" not in doc:
        raise ValueError(f"{p}: not a bastion eval results.json (no cases/variants)")
    return doc
