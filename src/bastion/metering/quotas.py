"""Quotas and rate limits per tenant, user or key: requests and tokens per fixed window, requests in flight.

Fixed windows (``window_s``, default a minute, aligned to the epoch) make the answer exact and cheap to
share: one counter per window in ``state/``, incremented only if it stays within the limit, so concurrent
requests cannot overshoot. The price of fixed windows is a possible burst of 2× the limit across a
window boundary; the headers say exactly when the window resets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.config.metering import LimitConfig
from bastion.errors import RateLimited
from bastion.state import State

from .subjects import Subject, applies, describe


@dataclass(slots=True)
class QuotaHold:
    """What a request took from the quotas: given back or corrected when it ends."""

    tokens: list[tuple[str, int, int]] = field(default_factory=list)  # (window key, tokens counted, ttl)
    concurrent: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def _reset_text(seconds: float) -> str:
    s = max(0, math.ceil(seconds))
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"


class Quotas:
    def __init__(self, rules: tuple[LimitConfig, ...], state: State,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.state = state
        self.clock = clock

    async def admit(self, subject: Subject, tokens: int) -> QuotaHold:
        """Count one request of about ``tokens`` tokens against every rule that applies, or raise 429."""
        hold = QuotaHold()
        taken: list[tuple[str, int]] = []
        try:
            for i, rule in enumerate(self.rules):
                who = applies(rule, subject)
                if who is None:
                    continue
                await self._admit_rule(i, rule, who, tokens, hold, taken)
        except RateLimited:
            for key, n in taken:  # give back what the earlier rules took
                await self.state.incr_if(key, -n, 0)
            raise
        return hold

    async def _admit_rule(
        self, i: int, rule: LimitConfig, who: str, tokens: int, hold: QuotaHold, taken: list[tuple[str, int]]
    ) -> None:
        now = self.clock()
        window = int(now // rule.window_s)
        reset = (window + 1) * rule.window_s - now
        base = f"q:{i}:{who}"
        label = describe(who)
        per = "minute" if rule.window_s == 60 else f"{rule.window_s} s"
        if rule.rpm is not None:
            key = f"{base}:r:{window}"
            n = await self.state.incr_if(key, 1, rule.rpm, ttl_s=rule.window_s * 2)
            if n is None:
                raise _limited(f"{label} is at its limit of {rule.rpm} requests per {per} (limits.{i})", reset,
                               _headers(rule.rpm, 0, reset, "requests"))
            taken.append((key, 1))
            _tighter(hold.headers, "requests", rule.rpm, rule.rpm - n, reset)
        if rule.tpm is not None:
            key = f"{base}:t:{window}"
            if tokens > rule.tpm:
                raise _limited(f"this request needs about {tokens} tokens, more than {label}'s whole limit of "
                               f"{rule.tpm} tokens per {per} (limits.{i}); lower max_tokens or shorten the input",
                               reset, _headers(rule.tpm, 0, reset, "tokens"), retry=False)
            n = await self.state.incr_if(key, tokens, rule.tpm, ttl_s=rule.window_s * 2)
            if n is None:
                raise _limited(f"{label} is at its limit of {rule.tpm} tokens per {per} (limits.{i})", reset,
                               _headers(rule.tpm, 0, reset, "tokens"))
            taken.append((key, tokens))
            hold.tokens.append((key, tokens, rule.window_s * 2))
            _tighter(hold.headers, "tokens", rule.tpm, rule.tpm - n, reset)
        if rule.concurrent is not None:
            key = f"{base}:c"
            n = await self.state.incr_if(key, 1, rule.concurrent)  # no expiry: released by every request
            if n is None:
                err = RateLimited(f"{label} already has {rule.concurrent} requests in flight, its limit "
                                  f"(limits.{i}); retry when one of them has finished", headers={"retry-after": "1"})
                raise err
            taken.append((key, 1))
            hold.concurrent.append(key)

    async def seed_tokens(self, i: int, rule: LimitConfig, who: str, tokens: int, now: float) -> None:
        """Start rule ``i``'s current token window for ``who`` at ``tokens`` (spent before a restart)."""
        key = f"q:{i}:{who}:t:{int(now // rule.window_s)}"
        await self.state.incr_if(key, tokens, 1 << 62, ttl_s=rule.window_s * 2)

    async def release(self, hold: QuotaHold, actual_tokens: int | None) -> None:
        """The request is over: free its concurrency slots and correct its token count."""
        for key in hold.concurrent:
            await self.state.incr_if(key, -1, 0)
        if actual_tokens is not None:
            for key, counted, ttl in hold.tokens:
                if actual_tokens != counted:
                    await self.state.incr_if(key, actual_tokens - counted, 1 << 62, ttl_s=ttl)


def _headers(limit: int, remaining: int, reset: float, kind: str) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
        f"x-ratelimit-reset-{kind}": _reset_text(reset),
    }


def _tighter(headers: dict[str, str], kind: str, limit: int, remaining: int, reset: float) -> None:
    """Keep the headers of the rule with the least room left."""
    have = headers.get(f"x-ratelimit-remaining-{kind}")
    if have is None or remaining < int(have):
        headers.update(_headers(limit, remaining, reset, kind))


def _limited(message: str, reset: float, headers: dict[str, str], *, retry: bool = True) -> RateLimited:
    h = dict(headers)
    if retry:
        h["retry-after"] = str(max(1, math.ceil(reset)))
    err = RateLimited(message + (f"; the window resets in {_reset_text(reset)}" if retry else ""), headers=h)
    return err
