"""Timeouts of one request: its total deadline, and each attempt's connect, first-token and chunk-gap
limits, from the alias's ``timeouts`` with the client's ``x-bastion-timeout-*`` headers laid over them.

It also says whose limit ended an attempt that timed out: a limit the client's header made shorter than the
operator's own is the caller's, and such a timeout says nothing about the deployment (the executor keeps it
out of the circuit breaker).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import aiohttp

from bastion.config.model import ProviderConfig
from bastion.config.reliability import TimeoutsConfig
from bastion.errors import InvalidRequest

from .context import RequestContext

# request header (without the x-bastion-timeout- prefix) -> TimeoutsConfig field
HEADERS = {"connect": "connect_s", "first-token": "first_token_s", "chunk-gap": "chunk_gap_s", "total": "total_s"}
MIN_S = 0.01
# the limits an attempt runs under, as named in AttemptTimeouts.caller
CONNECT, FIRST_TOKEN, CHUNK_GAP, TOTAL = "connect", "first_token", "chunk_gap", "total"


def _seconds(v: float) -> str:
    return f"{v:g} second" + ("" if v == 1 else "s")


def parse_overrides(options: dict[str, str], bounds: TimeoutsConfig, alias: str | None = None) -> dict[str, float]:
    """The client's timeout headers, each within ``[min_override_s, max_override_s]``, else a 400."""
    out: dict[str, float] = {}
    where = f"models.{alias}.timeouts or routing.timeouts" if alias else "routing.timeouts or the model's timeouts"
    for name, fld in HEADERS.items():
        raw = options.get(f"timeout-{name}")
        if raw is None:
            continue
        header = f"x-bastion-timeout-{name}"
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InvalidRequest(f"{header} must be a number of seconds, got {raw!r}")
        lo, hi = bounds.min_override_s, bounds.max_override_s
        if value < lo:
            raise InvalidRequest(
                f"{header} must be between {lo:g} and {hi:g} seconds, got {raw}: per-request timeouts may not "
                f"go below the floor of {_seconds(lo)} (timeouts.min_override_s, set under {where})"
            )
        if value > hi:
            raise InvalidRequest(
                f"{header} must be between {lo:g} and {hi:g} seconds, got {raw}: per-request timeouts may not "
                f"go above {_seconds(hi)} (timeouts.max_override_s, set under {where})"
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
    # the limits (CONNECT, FIRST_TOKEN, CHUNK_GAP, TOTAL) that the client's headers made shorter than the
    # operator's configuration: an attempt they end failed by the caller's choice, not the deployment's
    caller: frozenset[str] = field(default_factory=frozenset)
    headers: dict[str, float] = field(default_factory=dict)  # the client's overrides (TimeoutsConfig fields)

    def before_first_token(self, exc: BaseException | None) -> str:
        """The limit that ended an attempt before its first token: ``exc`` is aiohttp's own timeout
        (connect, socket read, or its total), or None when the first-token deadline expired."""
        if exc is None:
            if self.total_at is not None and (self.first_token_at is None or self.total_at <= self.first_token_at):
                return TOTAL
            return FIRST_TOKEN
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return CONNECT
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return CHUNK_GAP
        return TOTAL

    def mid_stream(self) -> str:
        """The limit that ended a stream after its first token: its total deadline if that has come, else
        the gap between chunks."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # no loop: nothing to compare with
            return CHUNK_GAP
        return TOTAL if self.total_at is not None and now >= self.total_at - 0.05 else CHUNK_GAP

    def expired_message(self, dep: str) -> str:
        loop_now = asyncio.get_running_loop().time()
        if self.total_at is not None and loop_now >= self.total_at - 0.001 and (
                self.first_token_at is None or self.total_at <= self.first_token_at):
            return f"deployment {dep!r} had not answered when the request's total timeout ran out" + self._own(TOTAL)
        return f"deployment {dep!r} sent no first token within {self.first_token_s:g}s ({self._key(FIRST_TOKEN)})"

    def read_message(self, dep: str, limit: str | None = None) -> str:
        if limit == CONNECT:
            return f"deployment {dep!r} could not be connected to in time ({self._key(CONNECT)})"
        if limit == CHUNK_GAP:
            return f"deployment {dep!r} went silent for more than {self.chunk_gap_s:g}s ({self._key(CHUNK_GAP)})"
        if limit == TOTAL:
            return f"deployment {dep!r} ran past the request's total timeout" + self._own(TOTAL)
        return (f"deployment {dep!r} went silent for more than {self.chunk_gap_s:g}s (timeouts.chunk_gap_s) "
                "or ran past the total timeout")

    def _key(self, limit: str) -> str:
        """Where a limit came from: the request's header, or the alias's configuration."""
        if f"{limit}_s" in self.headers:
            return f"the request's x-bastion-timeout-{limit.replace('_', '-')}"
        return f"timeouts.{limit}_s"

    def _own(self, limit: str) -> str:
        return f" ({self._key(limit)})" if f"{limit}_s" in self.headers else ""


class Deadlines:
    """The request's total deadline (loop time) and its timeout settings."""

    def __init__(self, total_s: float | None, overrides: dict[str, float], *, configured_total_s: float | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.total_at = None if total_s is None else self.loop.time() + total_s
        self.overrides = overrides
        # the total deadline is the caller's when its header shortened the operator's total_s
        own = overrides.get("total_s")
        self.caller_total = own is not None and (configured_total_s is None or own < configured_total_s)

    def remaining(self) -> float:
        return float("inf") if self.total_at is None else self.total_at - self.loop.time()

    def for_attempt(self, t: TimeoutsConfig, provider: ProviderConfig, *, stream: bool = True) -> AttemptTimeouts:
        """The limits of one attempt. A first-token limit always applies (the configured one, else a default
        per mode): a deployment that accepts connections and then hangs must fail its attempts, so that
        they fall back and its breaker opens, instead of holding every request it gets until total_s."""
        o = self.overrides
        op_connect: float = t.connect_s or provider.connect_timeout_s  # the operator's own limits
        op_gap: float = t.chunk_gap_s or provider.read_timeout_s
        op_first: float = t.first_token_s or (t.stream_first_token_s if stream else t.response_s)
        caller = {TOTAL} if self.caller_total else set()
        for limit, configured in ((CONNECT, op_connect), (CHUNK_GAP, op_gap), (FIRST_TOKEN, op_first)):
            own = o.get(f"{limit}_s")
            if own is not None and (configured is None or own < configured):
                caller.add(limit)
        connect = o.get("connect_s") or op_connect
        gap = o.get("chunk_gap_s") or op_gap
        first = o.get("first_token_s") or op_first
        now = self.loop.time()
        first_at = None if first is None else now + first
        if self.total_at is not None and (first_at is None or self.total_at < first_at):
            first_at = self.total_at
        remaining = None if self.total_at is None else max(MIN_S, self.total_at - now)
        client = aiohttp.ClientTimeout(total=remaining, connect=connect, sock_read=gap)
        return AttemptTimeouts(first_at, first, self.total_at, gap, client, frozenset(caller), dict(o))


def request_deadlines(ctx: RequestContext, t: TimeoutsConfig) -> Deadlines:
    overrides = parse_overrides(ctx.options, t, ctx.alias) if ctx.options else {}
    return Deadlines(overrides.get("total_s") or t.total_s, overrides, configured_total_s=t.total_s)
