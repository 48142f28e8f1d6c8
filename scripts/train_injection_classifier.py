"""Train the shipped prompt-injection classifier (reproducible).

    pip install -e '.[train]'
    python scripts/train_injection_classifier.py [--data ../shared/data/guards]

Trains on the *train* splits only: S-Labs ``train.csv``, neuralchemy ``core-train.parquet`` and BIPIA's
train contexts (email, code) with BIPIA's *train* attack instructions inserted into them. The BIPIA test
attacks and test contexts, and both validation splits, are never seen in fitting. The regularisation
strength and the operating threshold are chosen on the two validation splits: the threshold is the
score of the negatives at 1% false-positive rate (99th percentile of validation negatives' scores).

Features and scoring are those of ``bastion.guards.classifier`` (imported, so training and inference
cannot drift). Writes ``src/bastion/guards/data/injection_model.json.gz`` and
``src/bastion/guards/data/injection_metrics.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.guards.classifier import (  # noqa: E402
    InjectionClassifier,
    features,
    normalize,
    tokens,
)

SEED = 20240601
OUT_DIR = ROOT / "src" / "bastion" / "guards" / "data"
PRUNE = 1e-3  # weights with |w| below this are dropped from the shipped file


def _bipia_context(rec: dict) -> str:
    ctx = rec["context"]
    return "\n".join(ctx) if isinstance(ctx, list) else str(ctx)


def bipia_train_examples(base: Path, rng: random.Random) -> tuple[list[str], list[int]]:
    """Windows of BIPIA train contexts (benign) and train attacks inserted into context snippets (injected)."""
    bench = base / "bipia" / "benchmark"
    contexts = []
    for task in ("email", "code"):
        with open(bench / task / "train.jsonl") as fh:
            contexts += [_bipia_context(json.loads(line)) for line in fh if line.strip()]
    attacks = []
    for name in ("text_attack_train.json", "code_attack_train.json"):
        for items in json.loads((bench / name).read_text()).values():
            attacks += items
    texts, labels = [], []
    for ctx in contexts:
        words = ctx.split()
        for w in range(0, max(1, len(words)), 48):  # benign: the context in ~48-word pieces
            texts.append(" ".join(words[w : w + 48]))
            labels.append(0)
    for attack in attacks:
        texts.append(attack)
        labels.append(1)
        for _ in range(3):  # the attack inside a short snippet of a context, at a random position
            words = rng.choice(contexts).split()
            start = rng.randrange(max(1, len(words) - 30))
            snippet = words[start : start + 30]
            pos = rng.randint(0, len(snippet))
            texts.append(" ".join(snippet[:pos] + [attack] + snippet[pos:]))
            labels.append(1)
    return texts, labels


def load_split(base: Path, split: str) -> dict[str, tuple[list[str], list[int]]]:
    sl = pd.read_csv(base / "train" / "s-labs" / f"{split}.csv")
    nc = pd.read_parquet(base / "train" / "neuralchemy" / f"core-{split}.parquet")
    return {
        "s-labs": (sl["text"].astype(str).tolist(), sl["label"].astype(int).tolist()),
        "neuralchemy": (nc["text"].astype(str).tolist(), nc["label"].astype(int).tolist()),
    }


def _analyzer(text: str) -> list[str]:
    # Training rows are short: one window's features (inference takes the max over windows).
    return sorted(features(tokens(normalize(text))[: 10_000]))


def recall_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> tuple[float, float]:
    neg = np.sort(scores[labels == 0])
    thr = float(np.quantile(neg, 1 - fpr, method="higher")) if len(neg) else 0.5
    return float((scores[labels == 1] > thr).mean()), thr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "guards"))
    ap.add_argument("--out", default=str(OUT_DIR))
    ap.add_argument("--C", type=float, nargs="*", default=[1.0, 4.0, 16.0])
    args = ap.parse_args(argv)
    base = Path(args.data)
    rng = random.Random(SEED)

    train = load_split(base, "train")
    val = load_split(base, "validation")
    bt, bl = bipia_train_examples(base, rng)
    x_text = train["s-labs"][0] + train["neuralchemy"][0] + bt
    y = np.array(train["s-labs"][1] + train["neuralchemy"][1] + bl)
    print(f"train rows: {len(x_text)} (s-labs {len(train['s-labs'][0])}, neuralchemy {len(train['neuralchemy'][0])}, "
          f"bipia-train {len(bt)}), positives {y.mean():.3f}")

    vec = CountVectorizer(analyzer=_analyzer, binary=True, dtype=np.float64)
    x = vec.fit_transform(x_text)
    x = sparse.diags(1.0 / np.sqrt(np.maximum(x.getnnz(axis=1), 1))) @ x
    vocab = vec.get_feature_names_out()
    print(f"features: {len(vocab)}")

    best = None
    for c in args.C:
        lr = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=2000, random_state=SEED)
        lr.fit(x, y)
        clf = _to_classifier(lr, vocab, threshold=0.5)
        recalls = {}
        neg_scores = []
        for name, (texts, labels) in val.items():
            s = np.array([clf.score(t) for t in texts])
            lab = np.array(labels)
            recalls[name] = recall_at_fpr(s, lab)[0]
            neg_scores.append(s[lab == 0])
        mean_recall = float(np.mean(list(recalls.values())))
        print(f"C={c}: nonzero={len(clf.weights)} val recall@1%FPR {recalls} mean {mean_recall:.4f}")
        if best is None or mean_recall > best[0]:
            best = (mean_recall, c, clf, np.concatenate(neg_scores), recalls)
    assert best is not None
    _, c, clf, neg, recalls = best
    threshold = float(np.quantile(neg, 0.99, method="higher"))
    threshold = float(np.nextafter(threshold, 1.0))  # strictly above 99% of validation negatives
    clf.threshold = threshold
    print(f"chosen C={c}, threshold={threshold:.6f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": 1,
        "model": "logistic-regression, binary word 1-2-grams + in-word char 4-grams, row L2 norm, max over windows",
        "C": c,
        "seed": SEED,
        "bias": clf.bias,
        "threshold": threshold,
        "weights": dict(sorted(clf.weights.items())),
    }
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    (out / "injection_model.json.gz").write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    metrics = {"C": c, "threshold": threshold, "n_weights": len(payload["weights"]), "n_features": len(vocab),
               "train_rows": len(x_text), "validation_recall_at_1pct_fpr": recalls}
    (out / "injection_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(json.dumps(metrics, indent=2))
    return 0


def _to_classifier(lr: LogisticRegression, vocab: np.ndarray, threshold: float) -> InjectionClassifier:
    coef = lr.coef_[0]
    keep = np.flatnonzero(np.abs(coef) >= PRUNE)
    weights = {str(vocab[i]): round(float(coef[i]), 5) for i in keep}
    return InjectionClassifier(weights=weights, bias=round(float(lr.intercept_[0]), 6), threshold=threshold)


if __name__ == "__main__":
    raise SystemExit(main())
