"""Assertions that use models shipped with Bastion: similar (embeddings), refusal and not-refusal."""

from __future__ import annotations

from ..model import Answer, Case, Check
from ..semantic import Unavailable, refusal, similarity
from .base import Assertion, register

DEFAULT_SIMILARITY = 0.8


@register
class Similar(Assertion):
    """Cosine similarity of MiniLM embeddings of the answer and ``value`` (default: the reference) >= threshold."""

    type = "similar"
    options = {"value": {"type": "string"}, "threshold": {"type": "number", "minimum": -1, "maximum": 1}}
    category = "accuracy"

    def check(self, answer: Answer, case: Case) -> Check:
        expected = self.spec.get("value", case.reference)
        if expected is None:
            return self.error("similar needs a value or a case reference")
        threshold = float(self.spec.get("threshold", DEFAULT_SIMILARITY))
        try:
            sim = similarity(answer.text, expected)
        except Unavailable as e:
            return self.error(str(e))
        msg = f"similarity {sim:.3f} {'>=' if sim >= threshold else '<'} {threshold}"
        return self.ok(msg, sim) if sim >= threshold else self.fail(msg, sim)


@register
class Refusal(Assertion):
    """The answer is a refusal (bastion.guards.refusal.detect_refusal)."""

    type = "refusal"
    category = "refusal"
    want = True

    def check(self, answer: Answer, case: Case) -> Check:
        try:
            refused, score, reason = refusal(answer.text)
        except Unavailable as e:
            return self.error(str(e))
        detail = f"refusal={refused}" + (f" ({reason})" if reason else "")
        return self.ok(detail, score) if refused == self.want else self.fail(detail, score)


@register
class NotRefusal(Refusal):
    """The answer is not a refusal."""

    type = "not-refusal"
    want = False
