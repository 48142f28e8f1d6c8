"""Measure ``bastion.guards.refusal.detect_refusal`` on the XSTest v2 human-labelled model completions.

    .venv/bin/python scripts/eval_refusal.py [--data DIR] [--errors dev|test] [--show N]

Data: ``xstest_v2_completions_*.csv`` (GPT-4, Llama-2-70b-chat, Mistral-7B-Instruct; 450 each) from
``/work/shared/data/guards/xstest/model_completions`` (CC-BY-4.0 prompts; see the folder's README).
Labels: ``final_label`` 1_full_compliance / 2_full_refusal / 3_partial_refusal.

Split: deterministic, by the prompt (sha256 of its UTF-8 text, first byte even: dev, odd: test), so the three
models' answers to one prompt fall in the same half. The patterns were tuned on dev only; test is held out.

Headline figures: positives are full refusals, negatives full compliance, partial refusals excluded. Also
reported: partial refusals counted as refusals, and as compliance, and the share of partials flagged.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

from bastion.guards.refusal import detect_refusal

DEFAULT_DATA = Path("/work/shared/data/guards/xstest/model_completions")
FULL, PARTIAL, COMPLY = "2_full_refusal", "3_partial_refusal", "1_full_compliance"


def split_of(prompt: str) -> str:
    return "dev" if hashlib.sha256(prompt.encode("utf-8")).digest()[0] % 2 == 0 else "test"


def load(data: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    files = sorted(data.glob("xstest_v2_completions_*.csv"))
    if not files:
        sys.exit(f"no xstest_v2_completions_*.csv in {data}")
    for f in files:
        model = f.stem.removeprefix("xstest_v2_completions_")
        with f.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                r["model"] = model
                r["split"] = split_of(r["prompt"])
                rows.append(r)
    return rows


def prf(pairs: Iterable[tuple[bool, bool]]) -> tuple[float, float, float, int, int, int, int]:
    """(precision, recall, F1, tp, fp, fn, n) for (gold, predicted) pairs."""
    tp = fp = fn = n = 0
    for gold, pred in pairs:
        n += 1
        tp += gold and pred
        fp += (not gold) and pred
        fn += gold and not pred
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, tp, fp, fn, n


def line(name: str, pairs: list[tuple[bool, bool]]) -> str:
    p, r, f, tp, fp, fn, n = prf(pairs)
    return f"  {name:<28} P={p:.3f} R={r:.3f} F1={f:.3f}  (tp={tp} fp={fp} fn={fn} n={n})"


def report(rows: list[dict[str, str]], split: str) -> None:
    sel = [r for r in rows if r["split"] == split]
    pred = {id(r): detect_refusal(r["completion"]).refusal for r in sel}
    print(f"{split}: {len(sel)} completions "
          f"({sum(r['final_label'] == FULL for r in sel)} full refusals, "
          f"{sum(r['final_label'] == PARTIAL for r in sel)} partial, "
          f"{sum(r['final_label'] == COMPLY for r in sel)} compliance)")
    for model in [None, *sorted({r["model"] for r in sel})]:
        sub = [r for r in sel if model is None or r["model"] == model]
        name = "all models" if model is None else model
        print(line(f"{name}, partial excluded", [(r["final_label"] == FULL, pred[id(r)]) for r in sub
                                                 if r["final_label"] != PARTIAL]))
    print(line("partial = refusal", [(r["final_label"] != COMPLY, pred[id(r)]) for r in sel]))
    print(line("partial = compliance", [(r["final_label"] == FULL, pred[id(r)]) for r in sel]))
    partial = [r for r in sel if r["final_label"] == PARTIAL]
    if partial:
        flagged = sum(pred[id(r)] for r in partial)
        print(f"  partial refusals flagged: {flagged}/{len(partial)} ({flagged / len(partial):.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--errors", choices=["dev", "test"], help="print the misclassified answers of a split")
    ap.add_argument("--show", type=int, default=200, help="characters of each misclassified answer shown")
    args = ap.parse_args()
    rows = load(args.data)
    report(rows, "dev")
    print()
    report(rows, "test")
    if args.errors:
        print(f"\nerrors on {args.errors} (partial refusals excluded):")
        for r in rows:
            if r["split"] != args.errors or r["final_label"] == PARTIAL:
                continue
            v = detect_refusal(r["completion"])
            if v.refusal != (r["final_label"] == FULL):
                kind = "FN" if r["final_label"] == FULL else "FP"
                text = " ".join(r["completion"].split())[: args.show]
                print(f"{kind} {r['model']:<18} {v.score:.2f} {v.reason}\n    {r['prompt']}\n    {text}")


if __name__ == "__main__":
    main()
