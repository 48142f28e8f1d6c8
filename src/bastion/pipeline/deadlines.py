"""Timeouts of one request: its total deadline, and each attempt's connect, first-token and chunk-gap
limits, from the alias's ``timeouts`` with the client's ``x-bastion-timeout-*`` headers laid over them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from bastion.config.model import ProviderConfig
from bastion.config.reliability import TimeoutsConfig
from bastion.errors import InvalidRequest

from .context import RequestContext

# request header (without the x-bastion-timeout- prefix) -> TimeoutsConfig field
HEADERS = {"connect": "connect_s", "first-token": "first_token_s", "chunk-gap": "chunk_gap_s", "total": "total_s"}
MIN_S = 0.01


def parse_overrides(options: dict[str, str], bounds: TimeoutsConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, fld in HEADERS.items():
        raw = options.get(f"timeout-{name}")
        if raw is None:
            continue
        header = f"x-bastion-timeout-{name}"
        try:
            value = float(raw)
        except ValueError:
            raise InvalidRequest(f"{header} must be a number of seconds, got {raw!r}") from None
        if not MIN_S <= value <= bounds.max_override_s:
            raise InvalidRequest(
                f"{header} must be between {MIN_S} and {bounds.max_override_s:g} seconds "
                f"(the model's timeouts.max_override_s), got {raw}"
            )
        out[fld] = value
    return out


@dataclass(frozen=True, slots=True)
class AttemptTimeouts:
    first_token_at: float | None  # loop time by which the first token must have come (None: no limit)
    first_token_s: float | None
    total_at: float | None
    chunk_gap_s: float
    client: aiohttp.ClientTimeout

    def expired_message(self, dep: str) -> str:
        loop_now = asyncio.get_running_loop().time()
        if self.total_at is not None and loop_now >= self.total_at - 0.001 and (
                self.first_token_at is None or self.total_at <= self.first_token_at):
            return f"deployment {dep!r} had not answered when the request's total timeout ran out"
        return f"deployment {dep!r} sent no first token within {self.first_token_s:g}s (timeouts.first_token_s)"

    def read_message(self, dep: str) -> str:
        return (f"deployment {dep!r} went silent for more than {self.chunk_gap_s:g}s (timeouts.chunk_gap_s) "
                "or ran past the total timeout")


class Deadlines:
    """The request's total deadline (loop time) and its timeout settings."""

    def __init__(self, total_s: float | None, overrides: dict[str, float]) -> None:
        self.loop = asyncio.get_running_loop()
        self.total_at = None if total_s is None else self.loop.time() + total_s
        self.overrides = overrides

    def remaining(self) -> float:
        return float("inf") if self.total_at is None else self.total_at - self.loop.time()

    def for_attempt(self, t: TimeoutsConfig, provider: ProviderConfig) -> AttemptTimeouts:
        o = self.overrides
        connect = o.get("connect_s") or t.connect_s or provider.connect_timeout_s
        gap = o.get("chunk_gap_s") or t.chunk_gap_s or provider.read_timeout_s
        first = o.get("first_token_s") or t.first_token_s
        now = self.loop.time()
        first_at = None if first is None else now + first
        if self.total_at is not None and (first_at is None or self.total_at < first_at):
            first_at = self.total_at
        remaining = None if self.total_at is None else max(MIN_S, self.total_at - now)
        client = aiohttp.ClientTimeout(total=remaining, connect=connect, sock_read=gap)
        return AttemptTimeouts(first_at, first, self.total_at, gap, client)


def request_deadlines(ctx: RequestContext, t: TimeoutsConfig) -> Deadlines:
    overrides = parse_overrides(ctx.options, t) if ctx.options else {}
    return Deadlines(overrides.get("total_s") or t.total_s, overrides)
