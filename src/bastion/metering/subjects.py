"""Who a request is charged to: its tenant, user and key, and which scoped rules apply to it."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.config.metering import _Scoped

# The user a request that names none is counted under by per-user rules (budgets, quotas, spend-rate
# alerts), namespaced by tenant like any user: leaving the user out never escapes a per-user rule.
ANONYMOUS_USER = "-"


@dataclass(frozen=True, slots=True)
class Subject:
    tenant: str
    user: str | None
    key_id: str | None
    key_name: str | None = None


def applies(rule: _Scoped, s: Subject) -> str | None:
    """The state identity the rule counts ``s`` under (``scope:tenant/name``), or None if it does not apply.

    Users and keys are namespaced by tenant, so that two tenants' user "alice" never share a counter. A
    request without a user counts as the user :data:`ANONYMOUS_USER` of its tenant."""
    if rule.tenant is not None and rule.tenant != s.tenant:
        return None
    if rule.scope == "tenant":
        if rule.match is not None and rule.match != s.tenant:
            return None
        return f"tenant:{s.tenant}"
    if rule.scope == "user":
        user = s.user if s.user is not None else ANONYMOUS_USER
        if rule.match is not None and rule.match != user:
            return None
        return f"user:{s.tenant}/{user}"
    if s.key_id is None or (rule.match is not None and rule.match not in (s.key_id, s.key_name)):
        return None
    return f"key:{s.tenant}/{s.key_id}"


def describe(who: str) -> str:
    """A state identity as words for a message: ``user 'acme/bob'``, ``tenant 'acme'``, or the anonymous user."""
    scope, _, name = who.partition(":")
    if scope == "user" and name.endswith("/" + ANONYMOUS_USER):
        tenant = name[: -len(ANONYMOUS_USER) - 1]
        return f"the anonymous user of tenant {tenant!r} (requests that name no user)"
    return f"{scope} {name!r}"
