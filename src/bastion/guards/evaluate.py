"""Evaluate the shipped injection classifier on the public guard data (``bastion guard eval``).

Pure Python (csv/json; parquet needs ``pyarrow``, from the ``train`` extra). Splits:

* ``s-labs/validation`` and ``neuralchemy/validation``: labelled prompts, held-out (the training script
  fits on the train splits and chooses its settings and threshold on a dev split carved out of them);
* ``bipia``: BIPIA *test* contexts (email, table, code) clean, versus the same contexts with each BIPIA
  *test* attack instruction inserted at the start, middle or end (deterministic: attack ``i`` goes into
  context ``i mod n`` at position ``i mod 3``), none of which were seen in training or selection (only
  BIPIA's train contexts and train attacks are);
* ``xstest``: XSTest's 250 safe prompts (false-positive rate only).

Recall at 1% FPR uses a per-split threshold at the 99th percentile of that split's negatives' scores;
"at threshold" figures use the shipped threshold.
"""

from __future__ import annotations

import csv
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from bastion.guards.classifier import InjectionClassifier

DEFAULT_DATA = Path(os.environ.get("BASTION_GUARDS_DATA", "../shared/data/guards"))


def _quantile_higher(values: list[float], q: float) -> float:
    s = sorted(values)
    idx = min(len(s) - 1, max(0, int(-(-q * (len(s) - 1) // 1))))  # ceil(q * (n - 1))
    return s[idx]


def metrics(scores: list[float], labels: list[int], threshold: float) -> dict[str, Any]:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    out: dict[str, Any] = {"n_pos": len(pos), "n_neg": len(neg)}
    if neg:
        thr1 = _quantile_higher(neg, 0.99)
        out["fpr_at_threshold"] = sum(s >= threshold for s in neg) / len(neg)
        if pos:
            out["recall_at_1pct_fpr"] = sum(s > thr1 for s in pos) / len(pos)
    if pos:
        out["recall_at_threshold"] = sum(s >= threshold for s in pos) / len(pos)
    if pos and neg:
        out["balanced_accuracy"] = (out["recall_at_threshold"] + 1 - out["fpr_at_threshold"]) / 2
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_slabs(base: Path, split: str = "validation") -> tuple[list[str], list[int]]:
    rows = _read_csv(base / "train" / "s-labs" / f"{split}.csv")
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def load_neuralchemy(base: Path, split: str = "validation") -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq  # optional: the ``train`` extra

    t = pq.read_table(base / "train" / "neuralchemy" / f"core-{split}.parquet", columns=["text", "label"])
    return [str(x) for x in t.column("text").to_pylist()], [int(x) for x in t.column("label").to_pylist()]


def _context(rec: dict[str, Any]) -> str:
    ctx = rec["context"]
    return "\n".join(ctx) if isinstance(ctx, list) else str(ctx)


def insert_attack(context: str, attack: str, where: str) -> str:
    if where == "start":
        return f"{attack}\n{context}"
    if where == "end":
        return f"{context}\n{attack}"
    lines = context.split("\n")
    if len(lines) > 2:
        mid = len(lines) // 2
        return "\n".join(lines[:mid] + [attack] + lines[mid:])
    words = context.split(" ")
    mid = len(words) // 2
    return " ".join(words[:mid] + [attack] + words[mid:])


def load_bipia(base: Path) -> tuple[list[str], list[int]]:
    bench = base / "bipia" / "benchmark"
    texts: list[str] = []
    labels: list[int] = []
    for task, attack_file in (("email", "text_attack_test.json"), ("table", "text_attack_test.json"),
                              ("code", "code_attack_test.json")):
        with open(bench / task / "test.jsonl", encoding="utf-8") as fh:
            contexts = [_context(json.loads(line)) for line in fh if line.strip()]
        attacks = [a for items in json.loads((bench / attack_file).read_text()).values() for a in items]
        texts += contexts
        labels += [0] * len(contexts)
        for i, attack in enumerate(attacks):
            texts.append(insert_attack(contexts[i % len(contexts)], attack, ("start", "middle", "end")[i % 3]))
            labels.append(1)
    return texts, labels


def load_xstest_safe(base: Path) -> list[str]:
    return [r["prompt"] for r in _read_csv(base / "xstest" / "xstest_prompts.csv") if r["label"] == "safe"]


ORDINARY_SPLITS = {
    # 99 ordinary requests written before the hard-negative templates of the training script (which were then
    # shaped by them: read this figure as optimistic), 50 written once the templates were fixed, and 30
    # written after the shipped model was chosen; nothing was tuned on B or C.
    "ordinary prompts A (project)": "ordinary_prompts_a.txt",
    "ordinary prompts B (project)": "ordinary_prompts_b.txt",
    "ordinary prompts C (project)": "ordinary_prompts_c.txt",
}


def load_ordinary(name: str) -> list[str]:
    """Ordinary assistant requests shipped with the package (one per line): benign text that uses the words
    and punctuation of attacks (answer, sentence, translate, quotes, colons)."""
    text = resources.files("bastion.guards").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def evaluate(data_dir: str | Path | None = None, clf: InjectionClassifier | GuardScorer | None = None,
             limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Metrics per split; ``limit`` keeps the first ``limit`` rows of each labelled split (smoke tests)."""
    base = Path(data_dir) if data_dir is not None else DEFAULT_DATA
    clf = clf or InjectionClassifier.shared()
    thr = clf.threshold
    results: dict[str, dict[str, Any]] = {}
    for name, loader in (("s-labs/validation", load_slabs), ("neuralchemy/validation", load_neuralchemy),
                         ("bipia/test (clean vs injected)", load_bipia)):
        texts, labels = loader(base)
        if limit is not None:
            texts, labels = texts[:limit], labels[:limit]
        results[name] = metrics([clf.score(t) for t in texts], labels, thr)
    safe = load_xstest_safe(base)
    results["xstest/safe prompts"] = metrics([clf.score(t) for t in safe], [0] * len(safe), thr)
    for name, file in ORDINARY_SPLITS.items():
        texts = load_ordinary(file)
        results[name] = metrics([clf.score(t) for t in texts], [0] * len(texts), thr)
    return results


class GuardScorer:
    """The input guard as the gateway runs it (rules + classifier, the policy's 0-1 score), with the
    ``score``/``threshold`` shape of the classifier, so ``evaluate`` measures either."""

    def __init__(self, threshold: float = 0.8) -> None:
        from bastion.config.guards import InputGuardConfig

        from .stage import InputGuard

        self.threshold = threshold
        self._guard = InputGuard()
        self._policy = InputGuardConfig(action="log", threshold=threshold)

    def score(self, text: str) -> float:
        verdict = self._guard.check(self._policy, {"messages": [{"role": "user", "content": text}]})
        return float(verdict["score"]) if verdict else 0.0


def format_table(results: dict[str, dict[str, Any]], threshold: float) -> str:
    cols = ("n_pos", "n_neg", "recall_at_1pct_fpr", "recall_at_threshold", "balanced_accuracy", "fpr_at_threshold")
    lines = [f"shipped threshold: {threshold:.4f}",
             f"{'split':32} " + " ".join(f"{c:>19}" for c in cols)]
    for name, m in results.items():
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"{'-':>19}" if v is None else (f"{v:>19d}" if isinstance(v, int) else f"{v:>19.4f}"))
        lines.append(f"{name:32} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Evaluate the shipped prompt-injection classifier.")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="guard data directory (../shared/data/guards)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--detector", choices=("classifier", "guard"), default="classifier",
                    help="the classifier alone, or the input guard as deployed (rules + classifier, score 0.8)")
    args = ap.parse_args(argv)
    clf: InjectionClassifier | GuardScorer = InjectionClassifier.shared() if args.detector == "classifier" \
        else GuardScorer()
    results = evaluate(args.data, clf)
    print(json.dumps(results, indent=2) if args.json else format_table(results, clf.threshold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
