"""Who a request is charged to: its tenant, user and key, and which scoped rules apply to it."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.config.metering import _Scoped


@dataclass(frozen=True, slots=True)
class Subject:
    tenant: str
    user: str | None
    key_id: str | None
    key_name: str | None = None


def applies(rule: _Scoped, s: Subject) -> str | None:
    """The state identity the rule counts ``s`` under (``scope:tenant/name``), or None if it does not apply.

    Users and keys are namespaced by tenant, so that two tenants' user "alice" never share a counter."""
    if rule.tenant is not None and rule.tenant != s.tenant:
        return None
    if rule.scope == "tenant":
        if rule.match is not None and rule.match != s.tenant:
            return None
        return f"tenant:{s.tenant}"
    if rule.scope == "user":
        if s.user is None or (rule.match is not None and rule.match != s.user):
            return None
        return f"user:{s.tenant}/{s.user}"
    if s.key_id is None or (rule.match is not None and rule.match not in (s.key_id, s.key_name)):
        return None
    return f"key:{s.tenant}/{s.key_id}"
