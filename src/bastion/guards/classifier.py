"""Prompt-injection classifier trained by the project and shipped with the package.

Pure Python at inference (no numpy, no hub download): a logistic regression over binary word unigrams,
word bigrams and in-word character 4-grams, each row L2-normalised (divided by the square root of the
number of distinct features). The weights are a sparse ``{feature: weight}`` map in
``data/injection_model.json.gz``; features are keyed by their string, so there is no hashing to keep in
step between training and inference. Training: ``scripts/train_injection_classifier.py``.

Long inputs are scored as the maximum over overlapping windows of ``WINDOW`` tokens (stride
``WINDOW // 2``), so an instruction hidden in the middle of a long document is not diluted by the
benign text around it.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
import unicodedata
from importlib import resources
from typing import Any

__all__ = ["InjectionClassifier", "normalize", "tokens", "features", "windows", "WINDOW"]

WINDOW = 64  # tokens per scoring window
_STRIDE = WINDOW // 2
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


def windows(toks: list[str]) -> list[list[str]]:
    """Overlapping windows of ``WINDOW`` tokens with stride ``WINDOW // 2`` (one window if short)."""
    if len(toks) <= WINDOW:
        return [toks]
    out = []
    start = 0
    while True:
        out.append(toks[start : start + WINDOW])
        if start + WINDOW >= len(toks):
            break
        start += _STRIDE
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

    def _window_logit(self, toks: list[str]) -> float:
        feats = features(toks)
        if not feats:
            return self.bias
        w = self.weights
        # fsum is exactly rounded, so the result does not depend on (salted) set iteration order.
        total = math.fsum(map(w.__getitem__, feats & w.keys()))
        return self.bias + total / math.sqrt(len(feats))

    def logit(self, text: str) -> float:
        toks = tokens(normalize(text))
        return max(self._window_logit(w) for w in windows(toks))

    def score(self, text: str) -> float:
        """Probability-like injection score in [0, 1] (maximum over windows)."""
        return _sigmoid(self.logit(text))

    def is_injection(self, text: str) -> bool:
        return self.score(text) >= self.threshold

    def top_features(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` features pushing hardest towards "injection" in the highest-scoring window,
        as ``(feature, contribution)`` with the contribution on the logit scale."""
        toks = tokens(normalize(text))
        best = max(windows(toks), key=self._window_logit)
        feats = features(best)
        if not feats:
            return []
        scale = 1.0 / math.sqrt(len(feats))
        contrib = [(f, self.weights[f] * scale) for f in feats if f in self.weights]
        contrib.sort(key=lambda fc: (-fc[1], fc[0]))
        return [fc for fc in contrib[:k] if fc[1] > 0]
