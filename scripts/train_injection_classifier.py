"""Train the shipped prompt-injection classifier (reproducible).

    pip install -e '.[train]'
    python scripts/train_injection_classifier.py [--data ../shared/data/guards]

Data (``train`` splits only; nothing from the S-Labs / neuralchemy *validation* splits, the BIPIA *test*
attacks or contexts, or XSTest is read here):

* S-Labs ``train.csv`` and neuralchemy ``core-train.parquet`` (prompts);
* BIPIA *train* contexts (email, code) clean (benign) and with BIPIA *train* attack instructions inserted
  at the start, middle or end (injected), built with ``bastion.guards.evaluate.insert_attack``;
* the short injected prompts of the same split part, inserted into those documents too (direct
  injections hidden in a document);
* synthetic markdown tables (benign; and with train attacks inserted), generated from a fixed seed out of
  words of the training corpora, because BIPIA has no train split for its table task and long benign
  tables are the classic false positive of a max-over-windows scorer;
* synthetic ordinary requests (``hard_negatives``, ``--hard-negatives``, default 1,500 in train and 300 in
  dev) as negatives beside the S-Labs prompts: the public benign prompts rarely use the words and
  punctuation of requests to an assistant ("Answer in one sentence: ...") that the injections use often.

Every text is cut into the same token windows the classifier scores at inference (``windows``), and the
model is fitted on windows: every window of a benign text is a negative (the score is a max, so each one
must stay low); for an injected BIPIA document the windows that contain the inserted instruction are the
positives; for a long injected prompt all windows are positives in a first fit, then only its
best-scoring windows (a two-round multiple-instance approximation).

Selection: a *dev* split carved out of the train data (15% of S-Labs rows; 15% of neuralchemy
``group_id``s; 10 of 50 email and 10 of 50 code contexts, 3 of 15 text and 2 of 10 code attack
categories, a separate set of synthetic tables). The regularisation ``C`` and the long-document
penalty ``beta`` (logit = max window logit - beta * log(number of windows)) maximise the mean recall at
1% FPR over the dev prompts (S-Labs, neuralchemy) and the dev documents. The shipped model is then refit
on train + dev with the chosen settings; its threshold is the 99th percentile of the *dev-fold* model's
scores on the dev negatives (out-of-fold, so it reflects unseen data). The validation splits and the
BIPIA test split stay held-out for ``bastion guard eval``.

Features and scoring are those of ``bastion.guards.classifier`` (imported, so training and inference
cannot drift). Fixed seed; deterministic. Writes ``src/bastion/guards/data/injection_model.json.gz``
and ``src/bastion/guards/data/injection_metrics.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.guards.classifier import (  # noqa: E402
    InjectionClassifier,
    features,
    normalize,
    tokens,
    windows,
)
from bastion.guards.evaluate import _context, insert_attack  # noqa: E402

SEED = 20240601
OUT_DIR = ROOT / "src" / "bastion" / "guards" / "data"
PRUNE = 2e-3  # weights with |w| below this are dropped from the shipped file
MIN_DF = 2  # features seen in fewer training windows are not learned
DEV_TEXT_CATS = 3
DOC_FEATURES = True  # --no-doc-features
WINDOW_SIZE = 64  # tokens per scoring window (stride half of it); set by --window
DEV_CODE_CATS = 2


# ----------------------------------------------------------------------------------------------- data

def _h(s: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string (split assignment without global state)."""
    return int(hashlib.sha256((str(SEED) + s).encode()).hexdigest()[:12], 16) / 16**12


def load_prompts(base: Path) -> dict[str, tuple[list[str], list[int]]]:
    """S-Labs and neuralchemy train rows, split into ``train`` / ``dev`` (keys ``<name>/<part>``)."""
    sl = pd.read_csv(base / "train" / "s-labs" / "train.csv")
    nc = pd.read_parquet(base / "train" / "neuralchemy" / "core-train.parquet")
    out: dict[str, tuple[list[str], list[int]]] = {}
    for name, texts, labels, keys in (
        ("s-labs", sl["text"].astype(str).tolist(), sl["label"].astype(int).tolist(),
         [f"sl{i}" for i in range(len(sl))]),
        ("neuralchemy", nc["text"].astype(str).tolist(), nc["label"].astype(int).tolist(),
         nc["group_id"].astype(str).tolist()),
    ):
        for part in ("train", "dev"):
            sel = [i for i, k in enumerate(keys) if (_h(k) < 0.15) == (part == "dev")]
            out[f"{name}/{part}"] = ([texts[i] for i in sel], [labels[i] for i in sel])
    return out


def _attacks(path: Path) -> dict[str, list[str]]:
    return {k: list(v) for k, v in json.loads(path.read_text()).items()}


def _vocab_words(texts: list[str], rng: random.Random, n: int = 4000) -> list[str]:
    words = sorted({w for t in texts for w in t.split() if w.isalpha() and 2 < len(w) < 14})
    rng.shuffle(words)
    return sorted(words[:n])


def synthetic_table(rng: random.Random, words: list[str]) -> str:
    """A markdown-style pipe table of words and numbers (benign)."""
    ncol = rng.randint(3, 8)
    nrow = rng.randint(6, 40)

    def cell(kind: int) -> str:
        if kind == 0:
            return " ".join(rng.choice(words).capitalize() for _ in range(rng.randint(1, 4)))
        if kind == 1:
            return str(rng.randint(0, 5000))
        if kind == 2:
            return f"{rng.uniform(0, 100):.{rng.randint(1, 2)}f}"
        if kind == 3:
            return rng.choice(["PK", "K", "Yes", "No", "N/A", "-", "TBD", "M", "F", "Q1", "Q2", "Q3", "Q4"])
        return f"{rng.randint(1, 28)} {rng.choice(['Jan', 'Feb', 'March', 'April', 'May', 'June'])} {rng.randint(1950, 2023)}"

    kinds = [rng.choice([0, 0, 1, 2, 3, 4]) for _ in range(ncol)]
    kinds[0] = 0
    header = [" ".join(rng.choice(words).capitalize() for _ in range(rng.randint(1, 3))) for _ in range(ncol)]
    rows = [header] + [[cell(k) for k in kinds] for _ in range(nrow)]
    width = [max(len(r[c]) for r in rows) for c in range(ncol)]
    pad = rng.random() < 0.5
    lines = ["| " + " | ".join(r[c].ljust(width[c]) if pad else r[c] for c in range(ncol)) + " |" for r in rows]
    if rng.random() < 0.5:
        lines.insert(1, "|" + "|".join("-" * (width[c] + 2) for c in range(ncol)) + "|")
    return "\n".join(lines)


def load_documents(base: Path, prompts: dict[str, tuple[list[str], list[int]]]
                   ) -> dict[str, list[tuple[str, int, str]]]:
    """BIPIA train contexts + synthetic tables as ``(document, label, attack or "")``, train and dev."""
    rng = random.Random(SEED)
    bench = base / "bipia" / "benchmark"
    ctx: dict[str, list[str]] = {}
    for task in ("email", "code"):
        with open(bench / task / "train.jsonl", encoding="utf-8") as fh:
            ctx[task] = [_context(json.loads(line)) for line in fh if line.strip()]
    email_words = [w for c in ctx["email"] for w in c.split()]
    prompt_texts = prompts["s-labs/train"][0] + prompts["neuralchemy/train"][0]
    words = _vocab_words(prompt_texts[:3000] + [" ".join(email_words)], rng)
    text_att = _attacks(bench / "text_attack_train.json")
    code_att = _attacks(bench / "code_attack_train.json")
    tcats, ccats = sorted(text_att), sorted(code_att)
    rng.shuffle(tcats)
    rng.shuffle(ccats)
    dev_cats = set(tcats[:DEV_TEXT_CATS]) | set(ccats[:DEV_CODE_CATS])
    out: dict[str, list[tuple[str, int, str]]] = {"train": [], "dev": []}
    for part in ("train", "dev"):
        text_attacks = [a for k in tcats for a in text_att[k] if (k in dev_cats) == (part == "dev")]
        code_attacks = [a for k in ccats for a in code_att[k] if (k in dev_cats) == (part == "dev")]
        tables = [synthetic_table(rng, words) for _ in range(150 if part == "train" else 60)]
        pools = {
            "email": [c for i, c in enumerate(ctx["email"]) if (i % 5 == 0) == (part == "dev")],
            "code": [c for i, c in enumerate(ctx["code"]) if (i % 5 == 0) == (part == "dev")],
            "table": tables,
        }
        reps = 4 if part == "train" else 3
        # direct injections from the same part's prompt data, short ones, inserted into documents too
        direct = [t for name in ("s-labs", "neuralchemy")
                  for t, y in zip(*prompts[f"{name}/{part}"], strict=True)
                  if y == 1 and 4 <= len(tokens(normalize(t))) <= 40]
        rng.shuffle(direct)
        direct = direct[: 400 if part == "train" else 60]
        for task, contexts in pools.items():
            out[part] += [(c, 0, "") for c in contexts]
            attacks = code_attacks if task == "code" else text_attacks
            k = 0
            for attack in attacks:
                for _ in range(reps):
                    c = contexts[(k * 7 + rng.randrange(len(contexts))) % len(contexts)]
                    where = ("start", "middle", "end")[k % 3]
                    out[part].append((insert_attack(c, attack, where), 1, attack))
                    k += 1
        for k, attack in enumerate(direct):
            pool = pools[("email", "code", "table")[k % 3]]
            c = pool[rng.randrange(len(pool))]
            out[part].append((insert_attack(c, attack, ("start", "middle", "end")[(k // 3) % 3]), 1, attack))
    return out


# ------------------------------------------------------------------------------ synthetic hard negatives
# Ordinary requests to an assistant that use the words and shapes injections use too (answer, sentence,
# format, previous, instructions, translate, respond; colons, quotes, a final period): the public benign
# prompts rarely do, so without these the model learns that such words mean an attack. Built from templates
# with their own vocabulary, the payload questions taken from the same part's benign prompts. The words that
# really carry attacks (ignore, pretend, "from now on", act as) are deliberately left out.

_LANGS = ["Spanish", "French", "German", "Italian", "Portuguese", "Japanese", "Dutch", "Polish", "Korean", "Turkish"]
_TONES = ["formal", "friendly", "concise", "professional", "casual", "persuasive", "neutral", "warm"]
_UNITS = ["sentence", "paragraph", "text", "email", "message", "note", "phrase", "title", "headline", "line"]
_ROLES = ["tour guide", "history teacher", "pirate", "chef", "personal trainer", "travel agent", "poet",
          "math tutor", "career coach", "librarian", "detective", "sports commentator", "gardener"]
_TOPICS = ["the water cycle", "compound interest", "photosynthesis", "the French revolution", "black holes",
           "how vaccines work", "supply and demand", "the rules of chess", "machine learning", "volcanoes",
           "the immune system", "blockchains", "climate change", "the Roman empire", "jazz music",
           "password managers", "sleep hygiene", "electric cars", "the stock market", "recycling plastics",
           "time zones", "the printing press", "bees and pollination", "public speaking", "sourdough bread"]
_FORMATS = ["in one sentence", "in two sentences", "in three sentences", "in exactly {n} bullet points",
            "as a markdown table", "as a numbered list", "in JSON", "in plain English", "in simple words",
            "in under {m} words", "with one example", "without jargon", "as a short paragraph",
            "in {lang}", "step by step", "as a haiku", "for a ten-year-old", "in a {tone} tone"]
_TEMPLATES = [
    "Answer {fmt}: {q}", "Answer the following question {fmt}: {q}", "{q} Answer {fmt}.",
    "Please answer {fmt}. {q}", "Give your answer {fmt}.", "Explain {topic} {fmt}.",
    "Summarize the following {unit} {fmt}.", "Summarize this {unit} {fmt}: {q}",
    "Rewrite this {unit} so it sounds more {tone}: {q}", "Rewrite the following {unit} {fmt}.",
    "Translate this {unit} into {lang}: {q}", "Translate the following {unit} into {lang}.",
    "Translate your answer into {lang}.", "Respond {fmt}.", "Reply {fmt}: {q}",
    "Format the answer {fmt}.", "Use the same format as the previous answer.",
    "Explain the previous answer {fmt}.", "Repeat the last step, but {fmt}.", "Say that again {fmt}.",
    "Continue the previous {unit}.", "Complete the {unit}: {q}", "Use {topic} in a {unit}.",
    "Write one {unit} about {topic}.", "Write a {tone} {unit} about {topic}.",
    "Write step-by-step instructions for {topic}.", "Rewrite these instructions so they are easier to follow.",
    "Create a system prompt for a chatbot that teaches {topic}.", "Write a prompt for an essay about {topic}.",
    "Give me the answer first, then the explanation: {q}", "Rank these {n} facts about {topic} by importance.",
    "What does this {unit} mean: {q}", "Is this {unit} grammatically correct? {q}",
    "Classify the sentiment of this {unit} as positive, negative or neutral: {q}",
    "Extract the key points of this {unit} {fmt}.", "Define {topic} and use it in a {unit}.",
    "Describe your confidence in the answer on a scale from 1 to 10.", "Before answering, list your assumptions.",
    "Write a short {unit} for a {role}.", "What would a {role} say about {topic}?",
]


def hard_negatives(questions: list[str], n: int, seed: int) -> list[str]:
    """``n`` ordinary requests from the templates above (deterministic for ``seed``)."""
    rng = random.Random(seed)
    qs = [q.strip() for q in questions if 3 <= len(q.split()) <= 25]
    out = []
    for _ in range(n):
        fmt = rng.choice(_FORMATS).format(n=rng.randint(2, 7), m=rng.choice([20, 50, 100]),
                                          lang=rng.choice(_LANGS), tone=rng.choice(_TONES))
        text = rng.choice(_TEMPLATES).format(
            fmt=fmt, q=rng.choice(qs), topic=rng.choice(_TOPICS), unit=rng.choice(_UNITS), tone=rng.choice(_TONES),
            lang=rng.choice(_LANGS), role=rng.choice(_ROLES), n=rng.randint(3, 6))
        out.append(text if rng.random() < 0.7 else text.lower())
    return out


# ------------------------------------------------------------------------------------ featurisation

class Featurizer:
    """Window feature sets -> CSR rows over a fixed vocabulary, scaled exactly as at inference."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    @classmethod
    def fit(cls, feature_sets: list[set[str]], min_df: int) -> Featurizer:
        df: dict[str, int] = {}
        for fs in feature_sets:
            for f in fs:
                df[f] = df.get(f, 0) + 1
        names = sorted(f for f, n in df.items() if n >= min_df)
        return cls({f: i for i, f in enumerate(names)})

    def transform(self, feature_sets: list[set[str]], sizes: list[int]) -> sparse.csr_matrix:
        indptr, indices, data = [0], [], []
        for fs, n in zip(feature_sets, sizes, strict=True):
            idx = sorted(self.vocab[f] for f in fs if f in self.vocab)
            scale = 1.0 / math.sqrt(n) if n else 0.0
            indices += idx
            data += [scale] * len(idx)
            indptr.append(len(indices))
        return sparse.csr_matrix((np.array(data), np.array(indices, dtype=np.int64), np.array(indptr)),
                                 shape=(len(feature_sets), len(self.vocab)))


def text_windows(text: str) -> list[list[str]]:
    return windows(tokens(normalize(text)), WINDOW_SIZE)


def attack_windows(doc: str, attack: str) -> list[int]:
    """Indices of the windows of ``doc`` that contain most of the inserted ``attack``'s tokens."""
    wins = text_windows(doc)
    att = tokens(normalize(attack))
    if not att:
        return []
    need = set(att)
    hits = [i for i, w in enumerate(wins) if len(need & set(w)) >= 0.6 * len(need)]
    if not hits:  # attack longer than a window: every window holding a good part of it
        hits = [i for i, w in enumerate(wins) if len(need & set(w)) >= 0.3 * len(need)]
    return hits


class Corpus:
    """Windows of a list of texts, with their owning text and label."""

    def __init__(self, texts: list[str], labels: list[int], attacks: list[str] | None = None):
        self.labels = np.array(labels)
        self.feats: list[set[str]] = []
        self.owner: list[int] = []
        self.pos_windows: dict[int, list[int]] = {}  # known positive window positions (injected docs)
        self.sizes: list[int] = []
        for i, t in enumerate(texts):
            wins = text_windows(t)
            first = len(self.feats)
            for w in wins:
                fs = features(w)
                self.sizes.append(len(fs))
                if DOC_FEATURES and len(wins) > 1:  # windows of a long text also get "d:" copies
                    fs = fs | {"d:" + f for f in fs}
                self.feats.append(fs)
            self.owner += [i] * len(wins)
            if attacks is not None and attacks[i]:
                self.pos_windows[i] = [first + j for j in attack_windows(t, attacks[i])]
        self.owner_arr = np.array(self.owner)
        self.n_windows = np.bincount(self.owner_arr, minlength=len(texts))

    def doc_logits(self, win_logits: np.ndarray, beta: float) -> np.ndarray:
        out = np.full(len(self.labels), -np.inf)
        np.maximum.at(out, self.owner_arr, win_logits)
        return out - beta * np.log(self.n_windows)


def recall_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    neg = scores[labels == 0]
    thr = float(np.quantile(neg, 1 - fpr, method="higher"))
    return float((scores[labels == 1] > thr).mean())


# -------------------------------------------------------------------------------------------- fitting

def training_rows(corpora: list[Corpus], weights: list[float], win_logits: list[np.ndarray] | None,
                  top_k: int = 2) -> tuple[list[int], list[int], list[int], list[float]]:
    """(corpus index, window index, label, sample weight) rows. Negatives: all windows. Positives: the
    known attack windows, else all windows (round 1) or the ``top_k`` best windows (round 2)."""
    rows: list[tuple[int, int, int, float]] = []
    for ci, (c, w) in enumerate(zip(corpora, weights, strict=True)):
        by_owner: dict[int, list[int]] = {}
        for wi, o in enumerate(c.owner):
            by_owner.setdefault(o, []).append(wi)
        for o, wins in by_owner.items():
            if c.labels[o] == 0:
                rows += [(ci, wi, 0, w / math.sqrt(len(wins))) for wi in wins]
                continue
            if o in c.pos_windows:
                chosen = c.pos_windows[o]
            elif win_logits is None or len(wins) <= top_k:
                chosen = wins
            else:
                chosen = sorted(wins, key=lambda wi: -win_logits[ci][wi])[:top_k]
            rows += [(ci, wi, 1, w / math.sqrt(len(chosen))) for wi in chosen]
    return ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def fit(corpora: list[Corpus], weights: list[float], c_value: float, min_df: int
        ) -> tuple[LogisticRegression, Featurizer, list[sparse.csr_matrix]]:
    all_feats = [f for c in corpora for f in c.feats]
    fz = Featurizer.fit(all_feats, min_df)
    mats = [fz.transform(c.feats, c.sizes) for c in corpora]
    win_logits = None
    lr = None
    for _round in range(2):
        ci, wi, y, sw = training_rows(corpora, weights, win_logits)
        x = _gather(mats, ci, wi)  # rows come grouped by corpus, in the order training_rows emits them
        y_arr, sw_arr = np.array(y), np.array(sw)
        # balance classes on total weight
        pos_w, neg_w = sw_arr[y_arr == 1].sum(), sw_arr[y_arr == 0].sum()
        sw_arr = np.where(y_arr == 1, sw_arr * (len(y) / 2 / pos_w), sw_arr * (len(y) / 2 / neg_w))
        lr = LogisticRegression(C=c_value, solver="liblinear", max_iter=3000, random_state=SEED)
        lr.fit(x, y_arr, sample_weight=sw_arr)
        win_logits = [m @ lr.coef_[0] + lr.intercept_[0] for m in mats]
    assert lr is not None
    return lr, fz, mats


def _gather(mats: list[sparse.csr_matrix], ci: list[int], wi: list[int]) -> sparse.csr_matrix:
    parts = []
    ci_arr, wi_arr = np.array(ci), np.array(wi)
    for k, m in enumerate(mats):
        sel = wi_arr[ci_arr == k]
        if len(sel):
            parts.append(m[sel])
    return sparse.vstack(parts).tocsr() if len(parts) > 1 else parts[0]


def to_classifier(lr: LogisticRegression, fz: Featurizer, threshold: float, beta: float) -> InjectionClassifier:
    names = sorted(fz.vocab, key=fz.vocab.__getitem__)
    coef = lr.coef_[0]
    keep = np.flatnonzero(np.abs(coef) >= PRUNE)
    weights = {names[i]: round(float(coef[i]), 4) for i in keep}
    return InjectionClassifier(weights=weights, bias=round(float(lr.intercept_[0]), 6), threshold=threshold,
                               meta={"window_penalty": beta, "window": WINDOW_SIZE,
                                     "doc_features": DOC_FEATURES})


def main(argv: list[str] | None = None) -> int:
    global WINDOW_SIZE, DOC_FEATURES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "guards"))
    ap.add_argument("--out", default=str(OUT_DIR))
    ap.add_argument("--C", type=float, nargs="*", default=[8.0, 32.0, 128.0])
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--no-doc-features", action="store_true")
    ap.add_argument("--doc-weight", type=float, default=3.0)
    ap.add_argument("--beta", type=float, nargs="*", default=[0.0, 0.5, 1.0, 1.5])
    ap.add_argument("--hard-negatives", type=int, default=1500,
                    help="synthetic ordinary requests added as negatives to the train part (a fifth as many to dev)")
    args = ap.parse_args(argv)
    base = Path(args.data)
    WINDOW_SIZE = args.window
    DOC_FEATURES = not args.no_doc_features

    prompts = load_prompts(base)
    docs = load_documents(base, prompts)
    if args.hard_negatives:  # ordinary requests, negatives beside the S-Labs prompts of the same part
        for part, n, seed in (("train", args.hard_negatives, SEED + 2), ("dev", args.hard_negatives // 5, SEED + 3)):
            texts, labels = prompts[f"s-labs/{part}"]
            benign = [t for t, y in zip(texts, labels, strict=True) if y == 0]
            extra = hard_negatives(benign, n, seed)
            prompts[f"s-labs/{part}"] = (texts + extra, labels + [0] * len(extra))

    def corpus(name: str) -> Corpus:
        if name.startswith("docs/"):
            d = docs[name.split("/")[1]]
            return Corpus([t for t, _, _ in d], [y for _, y, _ in d], [a for _, _, a in d])
        return Corpus(*prompts[name])

    names = ["s-labs/train", "neuralchemy/train", "docs/train", "s-labs/dev", "neuralchemy/dev", "docs/dev"]
    corpora = {n: corpus(n) for n in names}
    weights = {"s-labs": 1.0, "neuralchemy": 1.5, "docs": args.doc_weight}
    for n, c in corpora.items():
        print(f"{n}: texts {len(c.labels)} (pos {int(c.labels.sum())}), windows {len(c.feats)}")

    train_names, dev_names = names[:3], names[3:]
    best = None
    for c_value in args.C:
        lr, fz, _ = fit([corpora[n] for n in train_names], [weights[n.split("/")[0]] for n in train_names],
                        c_value, MIN_DF)
        dev_logits = {}
        for n in dev_names:
            m = fz.transform(corpora[n].feats, corpora[n].sizes)
            dev_logits[n] = m @ lr.coef_[0] + lr.intercept_[0]
        for beta in args.beta:
            rec = {}
            for n in dev_names:
                s = corpora[n].doc_logits(dev_logits[n], beta)
                rec[n] = recall_at_fpr(s, corpora[n].labels)
            mean = float(np.mean(list(rec.values())))
            print(f"C={c_value} beta={beta}: dev recall@1%FPR {json.dumps(rec)} mean {mean:.4f}")
            if best is None or mean > best[0] + 1e-9:
                neg = np.concatenate([corpora[n].doc_logits(dev_logits[n], beta)[corpora[n].labels == 0]
                                      for n in dev_names])
                best = (mean, c_value, beta, neg, rec)
    assert best is not None
    _, c_value, beta, neg_logits, dev_rec = best
    thr_logit = float(np.quantile(neg_logits, 0.99, method="higher"))
    threshold = float(np.nextafter(1.0 / (1.0 + math.exp(-thr_logit)), 1.0))
    print(f"chosen C={c_value} beta={beta} threshold={threshold:.6f}")

    lr, fz, _ = fit([corpora[n] for n in names], [weights[n.split("/")[0]] for n in names], c_value, MIN_DF)
    clf = to_classifier(lr, fz, threshold, beta)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": 2,
        "model": "logistic-regression on token windows, binary word 1-2-grams + in-word char 4-grams, "
                 "row L2 norm; document logit = max window logit - window_penalty * log(#windows)",
        "C": c_value,
        "seed": SEED,
        "bias": clf.bias,
        "threshold": threshold,
        "window_penalty": beta,
        "window": WINDOW_SIZE,
        "doc_features": DOC_FEATURES,
        "weights": dict(sorted(clf.weights.items())),
    }
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    (out / "injection_model.json.gz").write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    metrics = {
        "C": c_value, "window_penalty": beta, "threshold": threshold,
        "n_weights": len(payload["weights"]), "n_features": len(fz.vocab),
        "train_texts": {n: int(len(corpora[n].labels)) for n in names},
        "selection": "dev split carved from the train data (see script docstring); validation splits, "
                     "BIPIA test and XSTest not used",
        "dev_recall_at_1pct_fpr": dev_rec,
    }
    (out / "injection_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
