"""Shared vocabulary of the output guards: which policy action applies to which finding, the errors a
blocked answer turns into, and the verdict records that go to the request log.

Every output guard produces verdicts of one shape, ``{"guard", "action", ...details}``: ``guard`` is one of
``output`` (secrets, PII, exfiltration links, HTML), ``leak`` (system prompt), ``refusal``, ``json``,
``tools``; ``action`` is what was done (``block``, ``redact``, ``flag``, ``log``, ``hold``, ``repair``,
``fallback``, or ``pass``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.config.guards import OutputGuardConfig
from bastion.errors import BastionError

from .output import ALL_KINDS, Finding


class OutputBlocked(BastionError):
    """The answer was withheld by an output policy. 422: the request was fine, the answer was not."""

    status = 422
    code = "output_blocked"


def category(kind: str) -> str:
    if kind.startswith("secret."):
        return "secrets"
    if kind.startswith("pii."):
        return "pii"
    if kind == "exfil.image":
        return "images"
    if kind == "exfil.link":
        return "links"
    return "html"


def enabled_kinds(policy: OutputGuardConfig) -> frozenset[str]:
    """The detectors worth running: those whose category's action is not ``off``."""
    return frozenset(k for k in ALL_KINDS if getattr(policy, category(k)) != "off")


def action_of(policy: OutputGuardConfig, kind: str) -> str:
    return str(getattr(policy, category(kind)))


def output_verdict(policy: OutputGuardConfig, findings: Sequence[Finding], where: str) -> dict[str, Any] | None:
    """One verdict for the findings in one text: the strongest action among their categories."""
    if not findings:
        return None
    order = ("block", "redact", "flag", "log")
    actions = {action_of(policy, f.kind) for f in findings}
    strongest = next(a for a in order if a in actions)
    return {"guard": "output", "action": strongest, "where": where,
            "findings": [{**f.as_dict(), "action": action_of(policy, f.kind)} for f in findings[:20]]}


def blocked_message(verdict: dict[str, Any]) -> str:
    kinds = sorted({f["kind"] for f in verdict.get("findings", []) if f.get("action") == "block"})
    return (f"the answer was withheld by the output guard: it contains {', '.join(kinds)} "
            f"(in {verdict.get('where')}). Change guards.output for this model or tenant (redact, flag or log) "
            "if this content is expected")


def redactable(policy: OutputGuardConfig, findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if action_of(policy, f.kind) == "redact"]
