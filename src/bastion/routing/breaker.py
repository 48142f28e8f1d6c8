"""Circuit breakers per deployment, kept in the shared ``state/`` so that replicas agree.

A breaker is *closed* (traffic flows), *open* (no traffic for ``open_s``) or *half-open* (one probe at a
time is let through; its success closes the breaker, its failure opens it again). It opens after
``consecutive_failures`` failures in a row, or when ``failure_rate`` of at least ``min_requests`` attempts
in the last ``window_s`` failed.

State keys, per deployment ``d``: ``brk:d:tripped`` (present while not closed), ``brk:d:open`` (the
wall-clock time the open period ends, with that TTL), ``brk:d:probe`` (the probe slot),
``brk:d:consec`` (failures in a row), windows ``brk:d:n`` / ``brk:d:fail``, and ``brk:d:fresh`` (set for
one window after closing, so that failures from before the recovery cannot re-open it by rate alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from bastion.config.reliability import BreakerConfig
from bastion.state import State


class Gate(Enum):
    CLOSED = "closed"  # go ahead
    PROBE = "probe"  # go ahead: this attempt is the half-open probe
    OPEN = "open"  # do not send


OnChange = Callable[[str, str], None]  # (deployment, new state: open | half_open | closed)


class Breakers:
    def __init__(self, state: State, on_change: OnChange | None = None) -> None:
        self.state = state
        self.on_change = on_change

    def _changed(self, dep: str, to: str) -> None:
        if self.on_change is not None:
            self.on_change(dep, to)

    async def gate(self, dep: str, cfg: BreakerConfig) -> Gate:
        if not cfg.enabled or await self.state.get(f"brk:{dep}:tripped") is None:
            return Gate.CLOSED
        if await self.state.get(f"brk:{dep}:open") is not None:
            return Gate.OPEN
        if await self.state.compare_and_set(f"brk:{dep}:probe", None, "1", ttl_s=cfg.probe_timeout_s):
            self._changed(dep, "half_open")
            return Gate.PROBE
        return Gate.OPEN  # half-open, and another request holds the probe slot

    async def reopens_at(self, dep: str) -> float | None:
        """Wall-clock time an open breaker lets its next probe through, or None if not open."""
        until = await self.state.get(f"brk:{dep}:open")
        return float(until) if until is not None else None

    async def record(self, dep: str, cfg: BreakerConfig, *, ok: bool, probe: bool) -> None:
        if not cfg.enabled:
            return
        st = self.state
        if ok:
            if probe:
                await st.delete(f"brk:{dep}:tripped")
                await st.delete(f"brk:{dep}:probe")
                await st.set(f"brk:{dep}:fresh", "1", ttl_s=cfg.window_s)
                self._changed(dep, "closed")
            await st.window_add(f"brk:{dep}:n", 1, cfg.window_s)
            if await st.get(f"brk:{dep}:consec") not in (None, "0"):
                await st.set(f"brk:{dep}:consec", "0")
            return
        if probe:
            await self._open(dep, cfg)
            await st.delete(f"brk:{dep}:probe")
            return
        consec = await st.incr(f"brk:{dep}:consec")
        n = await st.window_add(f"brk:{dep}:n", 1, cfg.window_s)
        fails = await st.window_add(f"brk:{dep}:fail", 1, cfg.window_s)
        by_rate = n >= cfg.min_requests and fails / n >= cfg.failure_rate and await st.get(f"brk:{dep}:fresh") is None
        if consec >= cfg.consecutive_failures or by_rate:
            if await st.compare_and_set(f"brk:{dep}:tripped", None, "1"):
                await self._open(dep, cfg)

    async def release_probe(self, dep: str) -> None:
        """A probe that ended without a verdict (cancelled, or refused for another reason) frees its slot."""
        await self.state.delete(f"brk:{dep}:probe")

    async def _open(self, dep: str, cfg: BreakerConfig) -> None:
        await self.state.set(f"brk:{dep}:tripped", "1")
        await self.state.set(f"brk:{dep}:open", repr(time.time() + cfg.open_s), ttl_s=cfg.open_s)
        await self.state.set(f"brk:{dep}:consec", "0")
        self._changed(dep, "open")
