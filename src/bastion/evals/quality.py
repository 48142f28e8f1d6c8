"""The five standard quality figures of a variant: task accuracy, format compliance, refusal rate,
hallucination rate, latency and cost.

- Task accuracy: over cases with a reference, the share of answers that match it — equal after
  normalisation (``equals``), or, when the embedder is installed, MiniLM cosine similarity >= 0.8.
- Format compliance: the share of format assertions (is-json, json-schema, regex) that passed.
- Refusal rate: the share of answers ``bastion.guards.refusal.detect_refusal`` calls a refusal.
- Hallucination rate: over cases with a context (else a reference), the share of answer sentences that are
  not supported by it. A sentence is supported when at least 60% of its content words (not stopwords, 3+
  letters or with a digit) occur in the context, or, with the embedder, when its cosine similarity to some
  context sentence is at least 0.7. Sentences without content words are skipped.
- Latency p50/p95 over answered samples (ms), and cost per case: the mean cost of one answer, averaged
  over the cases that reported a cost (``x-bastion-cost``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import Case, Outcome
from .runner import Run, Sample
from .semantic import Unavailable, embed, embeddings_available, refusal
from .stats import percentile
from .text import content_words, normalize, sentences

ACCURACY_SIMILARITY = 0.8
SUPPORT_OVERLAP = 0.6
SUPPORT_SIMILARITY = 0.7
FORMAT_TYPES = ("is-json", "json-schema", "regex")


class _Vectors:
    """Embeds each distinct text once (lazily, in one batch per call)."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}

    def get(self, texts: Iterable[str]) -> dict[str, Any]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, embed(todo), strict=True):
                self.cache[t] = v
        return self.cache


def _answered(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if not s.answer.error]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def accuracy(cases: list[Case], by_case: dict[str, list[Sample]], vectors: _Vectors | None) -> dict[str, Any]:
    hits = total = 0
    for c in cases:
        if c.reference is None:
            continue
        for s in by_case.get(c.id, []):
            total += 1
            if s.answer.error:
                continue
            if normalize(s.answer.text) == normalize(c.reference):
                hits += 1
            elif vectors is not None and s.answer.text.strip():
                v = vectors.get([s.answer.text, c.reference])
                hits += float(v[s.answer.text] @ v[c.reference]) >= ACCURACY_SIMILARITY
    return {"value": _ratio(hits, total), "samples": total,
            "method": "normalised equality" + (" or MiniLM similarity >= 0.8" if vectors else "")}


def hallucination(cases: list[Case], by_case: dict[str, list[Sample]], vectors: _Vectors | None) -> dict[str, Any]:
    unsupported = considered = 0
    for c in cases:
        ground = c.context or c.reference
        if not ground:
            continue
        ground_words = content_words(ground)
        ground_sents = sentences(ground)
        for s in _answered(by_case.get(c.id, [])):
            for sent in sentences(s.answer.text):
                words = content_words(sent)
                if not words:
                    continue
                considered += 1
                if len(words & ground_words) / len(words) >= SUPPORT_OVERLAP:
                    continue
                if vectors is not None and ground_sents:
                    v = vectors.get([sent, *ground_sents])
                    if max(float(v[sent] @ v[g]) for g in ground_sents) >= SUPPORT_SIMILARITY:
                        continue
                unsupported += 1
    method = "content-word overlap >= 0.6" + (" or MiniLM similarity >= 0.7" if vectors else "")
    return {"value": _ratio(unsupported, considered), "sentences": considered, "method": method}


def refusal_rate(samples: list[Sample]) -> dict[str, Any]:
    answered = _answered(samples)
    try:
        n = sum(refusal(s.answer.text)[0] for s in answered)
    except Unavailable as e:
        return {"value": None, "samples": len(answered), "note": str(e)}
    return {"value": _ratio(n, len(answered)), "samples": len(answered)}


def format_compliance(samples: list[Sample]) -> dict[str, Any]:
    checks = [c for s in samples for c in s.checks if c.type in FORMAT_TYPES]
    return {"value": _ratio(sum(c.outcome is Outcome.PASS for c in checks), len(checks)), "checks": len(checks)}


def latency_and_cost(cases: list[Case], by_case: dict[str, list[Sample]]) -> dict[str, Any]:
    ms = [s.answer.latency_ms for c in cases for s in _answered(by_case.get(c.id, [])) if s.answer.latency_ms is not None]
    per_case = []
    total = 0.0
    for c in cases:
        costs = [s.answer.cost_usd for s in by_case.get(c.id, []) if s.answer.cost_usd is not None]
        total += sum(costs)
        if costs:
            per_case.append(sum(costs) / len(costs))
    return {"latency_p50_ms": percentile(ms, 50), "latency_p95_ms": percentile(ms, 95),
            "cost_per_case_usd": sum(per_case) / len(per_case) if per_case else None,
            "cost_total_usd": total if per_case else None}


def quality(run: Run, variant: str, *, use_embeddings: bool | None = None) -> dict[str, Any]:
    """The five figures for one variant of a run (None where nothing could be measured)."""
    cases = run.suite.cases
    by_case = {c.id: run.samples_of(variant, c.id) for c in cases}
    samples = [s for ss in by_case.values() for s in ss]
    if use_embeddings is None:
        use_embeddings = embeddings_available() and any(c.reference or c.context for c in cases)
    vectors = _Vectors() if use_embeddings else None
    try:
        acc, hal = accuracy(cases, by_case, vectors), hallucination(cases, by_case, vectors)
    except Unavailable:
        acc, hal = accuracy(cases, by_case, None), hallucination(cases, by_case, None)
    return {"task_accuracy": acc, "format_compliance": format_compliance(samples), "refusal_rate": refusal_rate(samples),
            "hallucination_rate": hal, **latency_and_cost(cases, by_case)}
