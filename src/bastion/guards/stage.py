"""The input guard as a pipeline stage: scan the request's user turns and untrusted content, then block,
flag or log according to the route's policy. Every verdict goes to the request log and to metrics."""

from __future__ import annotations

import logging
from typing import Any

from bastion.config.guards import InputGuardConfig
from bastion.errors import BastionError

from .input import scan_input
from .protect import untrusted_label
from .scan_cache import ScanCache, TextScan

log = logging.getLogger("bastion.guards")

CLASSIFIER_POLICY_POINT = 0.8  # the classifier's shipped threshold maps to this score (the default policy)


class PromptInjectionDetected(BastionError):
    status = 400
    code = "prompt_injection_detected"


def _texts(content: Any, only_untrusted: bool = False) -> list[str]:
    if isinstance(content, str):
        return [] if only_untrusted else [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str) and (not only_untrusted or untrusted_label(part.get("untrusted"))):
                    out.append(part["text"])
                if part.get("type") == "tool_result":
                    out.extend(_texts(part.get("content")))
    return out


def scanned_texts(body: dict[str, Any], scope: str) -> list[tuple[str, str]]:
    """(where, text) of what the guard reads: user turns, tool results and content marked untrusted (in
    any role), or every message."""
    out: list[tuple[str, str]] = []
    for i, m in enumerate(body.get("messages") or []):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if scope == "all" or role in ("user", "tool") or untrusted_label(m.get("untrusted")):
            out.extend((f"messages.{i}", t) for t in _texts(m.get("content")))
        else:
            out.extend((f"messages.{i}", t) for t in _texts(m.get("content"), only_untrusted=True))
    if scope == "all" and isinstance(body.get("system"), str | list):
        out.extend(("system", t) for t in _texts(body["system"]))
    return out


class InputGuard:
    def __init__(self) -> None:
        self._classifier: Any = None
        self._classifier_checked = False
        self.scans = ScanCache()

    def _scan(self, text: str, clf: Any) -> TextScan:
        """Rules and classifier on one text, or their cached result for the same text."""
        key = self.scans.key(text, clf is not None)
        hit = self.scans.get(key)
        if hit is not None:
            return hit
        v = scan_input(text)
        prob = float(clf.score(v.normalized or text)) if clf is not None and text.strip() else None
        scan = TextScan(tuple(r.as_dict() for r in v.reasons), v.score, prob)
        self.scans.put(key, scan)
        return scan

    def _clf(self) -> Any:
        if not self._classifier_checked:
            self._classifier_checked = True
            try:
                from .classifier import InjectionClassifier

                self._classifier = InjectionClassifier.shared()
            except Exception as e:  # not shipped (yet) or broken: the rules still run
                log.info("injection classifier unavailable (%s); rules only", e)
        return self._classifier

    def check(self, p: InputGuardConfig, body: dict[str, Any]) -> dict[str, Any] | None:
        """The verdict (for the log) or None when the guard is off; raises when the policy blocks."""
        if p.action == "off":
            return None
        best = 0.0
        reasons: list[dict[str, Any]] = []
        clf = self._clf() if p.classifier else None
        for where, text in scanned_texts(body, p.scan):
            v = self._scan(text, clf)
            for r in v.reasons:
                reasons.append({"where": where, **r, "span": list(r["span"])})
            best = max(best, v.score)
            if v.probability is not None:
                prob = v.probability
                thr = float(getattr(clf, "threshold", 0.5))
                s = CLASSIFIER_POLICY_POINT * prob / thr if prob < thr else \
                    CLASSIFIER_POLICY_POINT + (1 - CLASSIFIER_POLICY_POINT) * (prob - thr) / max(1e-9, 1 - thr)
                if s >= 0.5:
                    reasons.append({"where": where, "rule": "classifier", "score": round(s, 4),
                                    "probability": round(prob, 4)})
                best = max(best, s)
        hit = best >= p.threshold
        verdict = {"guard": "input", "score": round(best, 4), "threshold": p.threshold,
                   "action": p.action if hit else "pass", "reasons": reasons[:20]}
        if hit and p.action == "block":
            top = sorted(reasons, key=lambda r: -r["score"])[:3]
            why = "; ".join(f"{r['rule']} {r['score']:.2f} in {r['where']}"
                            + (f": {r['excerpt']!r}" if r.get("excerpt") else "") for r in top)
            raise PromptInjectionDetected(
                f"the request was blocked by the input guard: score {best:.2f} >= {p.threshold:g} ({why}). "
                "If this is a false positive, change guards.input for this model (action flag or log, or a "
                "higher threshold)",
                headers={"x-bastion-guard": "input=block"},
            )
        return verdict
