"""Prompt-injection classifier trained by the project and shipped with the package.

Pure Python at inference (no numpy, no hub download): a logistic regression over binary word unigrams,
word bigrams and in-word character 4-grams, each row L2-normalised (divided by the square root of the
number of distinct features). The weights are a sparse ``{feature: weight}`` map in
``data/injection_model.json.gz``; features are keyed by their string, so there is no hashing to keep in
step between training and inference. Training: ``scripts/train_injection_classifier.py``.

Long inputs are scored as the maximum over overlapping windows of ``WINDOW`` tokens (stride
``WINDOW // 2``), so an instruction hidden in the middle of a long document is not diluted by the
benign text around it. Two things keep that maximum calibrated on long benign documents (tables, code
answers, e-mails): windows of a multi-window text also add ``d:<feature>`` weights, learnt on document
windows (so an instruction inside a document can count more than the same words as a whole prompt), and
the document logit pays ``window_penalty * log(number of windows)`` for its extra chances to cross the
threshold. Both come from the model file (older files without them score as before).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
import unicodedata
from importlib import resources
from itertools import chain, repeat
from typing import Any

__all__ = ["InjectionClassifier", "normalize", "tokens", "features", "windows", "WINDOW"]

WINDOW = 64  # tokens per scoring window
QUANTUM = 1e-4  # the model file stores weights with 4 decimals
_CHAR_N = 4
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WS_RE = re.compile(r"\s+")
_MODEL_FILE = "injection_model.json.gz"
_char_cache: dict[str, tuple[str, ...]] = {}
_CHAR_CACHE_MAX = 200_000


def normalize(text: str) -> str:
    """NFKC, lowercase, whitespace collapsed. Identical in training and inference."""
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def tokens(text: str) -> list[str]:
    """Tokens of already-normalised text: runs of word characters, and single punctuation marks."""
    return _TOKEN_RE.findall(text)


def _chars(tok: str) -> tuple[str, ...]:
    grams = _char_cache.get(tok)
    if grams is None:
        padded = f"<{tok}>"
        if len(padded) <= _CHAR_N:
            grams = ("c:" + padded,)
        else:
            grams = tuple("c:" + padded[i : i + _CHAR_N] for i in range(len(padded) - _CHAR_N + 1))
        if len(_char_cache) < _CHAR_CACHE_MAX:
            _char_cache[tok] = grams
    return grams


def features(toks: list[str]) -> set[str]:
    """Distinct features of one token window: ``w:`` unigrams, ``b:`` bigrams, ``c:`` char 4-grams."""
    feats = {"w:" + t for t in toks}
    feats.update(["b:" + a + " " + b for a, b in zip(toks, toks[1:], strict=False)])
    for t in set(toks):
        feats.update(_chars(t))
    return feats


_tok_cache: dict[str, tuple[str, ...]] = {}


def _token_features(tok: str) -> tuple[str, ...]:
    """A token's unigram and character n-gram features (cached)."""
    f = _tok_cache.get(tok)
    if f is None:
        f = ("w:" + tok, *_chars(tok))
        if len(_tok_cache) < _CHAR_CACHE_MAX:
            _tok_cache[tok] = f
    return f



def window_ranges(n: int, size: int = WINDOW) -> list[tuple[int, int]]:
    """(start, end) of the windows of ``windows`` over ``n`` tokens."""
    if n <= size:
        return [(0, n)]
    stride = max(1, size // 2)
    out = []
    start = 0
    while True:
        out.append((start, min(n, start + size)))
        if start + size >= n:
            break
        start += stride
    return out


def window_features(toks: list[str], size: int = WINDOW) -> list[set[str]]:
    """``[features(w) for w in windows(toks, size)]``, sharing the work of overlapping windows: each bigram
    is built once, and a token's unigram and character n-grams come from a per-token cache."""
    bi = ["b:" + a + " " + b for a, b in zip(toks, toks[1:], strict=False)]
    out = []
    for s, e in window_ranges(len(toks), size):
        feats = set(chain.from_iterable(map(_token_features, set(toks[s:e]))))
        feats.update(bi[s:e - 1])
        out.append(feats)
    return out


def windows(toks: list[str], size: int = WINDOW) -> list[list[str]]:
    """Overlapping windows of ``size`` tokens with stride ``size // 2`` (one window if short)."""
    if len(toks) <= size:
        return [toks]
    stride = max(1, size // 2)
    out = []
    start = 0
    while True:
        out.append(toks[start : start + size])
        if start + size >= len(toks):
            break
        start += stride
    return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class InjectionClassifier:
    """Linear injection detector. ``score(text)`` in [0, 1]; flag when ``score >= threshold``."""

    _shared: InjectionClassifier | None = None
    _lock = threading.Lock()

    def __init__(self, weights: dict[str, float], bias: float, threshold: float, meta: dict[str, Any] | None = None):
        self.weights = weights
        self.bias = bias
        self.threshold = threshold
        self.meta = meta or {}
        self.window_penalty = float(self.meta.get("window_penalty", 0.0))
        self.window = int(self.meta.get("window", WINDOW))
        self.doc_features = bool(self.meta.get("doc_features", False))
        # "d:<feature>" weights apply to windows of multi-window texts; kept keyed by the plain feature
        self._doc_weights = {k[2:]: v for k, v in weights.items() if k.startswith("d:")} if self.doc_features else {}
        self._merged: dict[str, float] | None = None
        # doc -> weights in units of QUANTUM when all are multiples of it, else None
        self._int: dict[bool, dict[str, int] | None] = {}
        self._tokw: dict[str, tuple[tuple[str, int], ...]] = {}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> InjectionClassifier:
        return cls(
            weights=payload["weights"],
            bias=float(payload["bias"]),
            threshold=float(payload["threshold"]),
            meta={k: v for k, v in payload.items() if k != "weights"},
        )

    @classmethod
    def load(cls, path: str | None = None) -> InjectionClassifier:
        if path is None:
            raw = resources.files("bastion.guards").joinpath("data", _MODEL_FILE).read_bytes()
        else:
            with open(path, "rb") as fh:
                raw = fh.read()
        return cls.from_payload(json.loads(gzip.decompress(raw)))

    @classmethod
    def shared(cls) -> InjectionClassifier:
        """The shipped model, loaded once (thread-safe, lazy)."""
        inst = cls._shared
        if inst is None:
            with cls._lock:
                inst = cls._shared
                if inst is None:
                    inst = cls._shared = cls.load()
        return inst

    def _doc_total(self) -> dict[str, float]:
        """Plain + ``d:`` weight per feature (one lookup per feature for document windows), built once."""
        merged = self._merged
        if merged is None:
            merged = {k: v for k, v in self.weights.items() if not k.startswith("d:")}
            for k, v in self._doc_weights.items():
                merged[k] = merged.get(k, 0.0) + v
            self._merged = merged
        return merged

    def _window_logit(self, toks: list[str], doc: bool = False) -> float:
        return self._feats_logit(features(toks), doc)

    def _int_weights(self, doc: bool) -> dict[str, int] | None:
        """The weights as integers in units of QUANTUM (the model file stores 4 decimals), or None when a
        weight is not such a multiple. Integer sums are exact and independent of the (salted) order in which
        a set is iterated, and much faster than ``math.fsum``."""
        iw = self._int.get(doc)
        if iw is None and doc not in self._int:
            src = self._doc_total() if doc and self._doc_weights else \
                {k: v for k, v in self.weights.items() if not k.startswith("d:")}
            iw = {k: round(v / QUANTUM) for k, v in src.items()}
            if any(abs(v - iw[k] * QUANTUM) > 1e-9 for k, v in src.items()):
                iw = None
            self._int[doc] = iw
        return iw

    def _token_weights(self, tok: str) -> tuple[tuple[str, int], ...]:
        """(feature, integer weight) of a token's unigram and character n-grams that the document model
        knows, cached: most of a block's weight lookups then hit this small cache, not the large table."""
        tw = self._tokw.get(tok)
        if tw is None:
            iw = self._int_weights(True)
            assert iw is not None
            tw = tuple((f, iw[f]) for f in _token_features(tok) if f in iw)
            if len(self._tokw) < _CHAR_CACHE_MAX:
                self._tokw[tok] = tw
        return tw

    def _sum(self, feats: Any, doc: bool) -> float:
        iw = self._int_weights(doc)
        if iw is not None:
            return sum(map(iw.get, feats, repeat(0))) * QUANTUM
        w = self._doc_total() if doc and self._doc_weights else self.weights
        # fsum is exactly rounded, so the result does not depend on (salted) set iteration order.
        return math.fsum(map(w.get, feats, repeat(0.0)))

    def _feats_logit(self, feats: set[str], doc: bool) -> float:
        if not feats:
            return self.bias
        return self.bias + self._sum(feats, doc) / math.sqrt(len(feats))

    def logit(self, text: str) -> float:
        """Maximum window logit, minus ``window_penalty * log(number of windows)``: the maximum of many
        benign windows drifts upwards with their number, so long documents pay for their extra chances."""
        toks = tokens(normalize(text))
        if len(toks) <= self.window or self.window % 2:
            wins = window_features(toks, self.window)
            doc = len(wins) > 1
            best = max(self._feats_logit(f, doc) for f in wins)
            n = len(wins)
        else:
            best, n = self._blocked_logit(toks)
        if n > 1 and self.window_penalty:
            best -= self.window_penalty * math.log(n)
        return best

    def _blocked_logit(self, toks: list[str]) -> tuple[float, int]:
        """The maximum window logit of a multi-window text, computed per half-window block.

        With stride = window / 2, window j is block j ∪ block j+1 (blocks of window/2 tokens) plus the
        bigram across their boundary. Each block's feature set and weight sum are built once; a window's
        sum is the two blocks' sums minus what they share (inclusion-exclusion), so each token is
        featurised once instead of twice and each weight looked up about once. Integer weights keep the
        sums exact: equal to scoring every window's feature set."""
        half = self.window // 2
        iw = self._int_weights(True)
        if iw is None:  # weights that are not multiples of QUANTUM: score each window's set
            wins = window_features(toks, self.window)
            return max(self._feats_logit(f, True) for f in wins), len(wins)
        get = iw.get
        tokw = self._token_weights
        blocks: list[set[str]] = []
        weights: list[dict[str, int]] = []
        sums: list[int] = []
        for s in range(0, len(toks), half):
            part = toks[s:s + half]
            distinct = set(part)
            feats = set(chain.from_iterable(map(_token_features, distinct)))
            bigrams = ["b:" + x + " " + y for x, y in zip(part, part[1:], strict=False)]
            feats.update(bigrams)
            wd = dict(chain.from_iterable(map(tokw, distinct)))  # the block's features in the model
            for f in bigrams:
                v = get(f)
                if v is not None:
                    wd[f] = v
            blocks.append(feats)
            weights.append(wd)
            sums.append(sum(wd.values()))
        n = len(window_ranges(len(toks), self.window))
        best = -math.inf
        for j in range(n):
            a, b = blocks[j], blocks[j + 1]
            wa = weights[j]
            cross = "b:" + toks[(j + 1) * half - 1] + " " + toks[(j + 1) * half]
            new = cross not in a and cross not in b
            size = len(a) + len(b) - len(a & b) + new
            shared = sum(map(wa.__getitem__, wa.keys() & weights[j + 1].keys()))
            total = sums[j] + sums[j + 1] - shared + (get(cross, 0) if new else 0)
            best = max(best, self.bias + total * QUANTUM / math.sqrt(size))
        return best, n

    def score(self, text: str) -> float:
        """Probability-like injection score in [0, 1] (maximum over windows)."""
        return _sigmoid(self.logit(text))

    def is_injection(self, text: str) -> bool:
        return self.score(text) >= self.threshold

    def top_features(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` features pushing hardest towards "injection" in the highest-scoring window,
        as ``(feature, contribution)`` with the contribution on the logit scale."""
        toks = tokens(normalize(text))
        wins = windows(toks, self.window)
        doc = len(wins) > 1
        best = max(wins, key=lambda win: self._window_logit(win, doc))
        feats = features(best)
        if not feats:
            return []
        scale = 1.0 / math.sqrt(len(feats))
        if doc and self.doc_features:
            feats = feats | {"d:" + f for f in feats}
        contrib = [(f, self.weights[f] * scale) for f in feats if f in self.weights]
        contrib.sort(key=lambda fc: (-fc[1], fc[0]))
        return [fc for fc in contrib[:k] if fc[1] > 0]
