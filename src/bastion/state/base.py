"""Shared mutable state behind one small interface, so that every replica sees the same breakers,
budgets and rate-limit windows once the backend is shared (Redis); in-process by default.

The primitives are chosen so that a Redis backend can implement each one atomically with one command or
one short script: plain values with a time-to-live and compare-and-set, and sliding-window counters kept
as per-second buckets.
"""

from __future__ import annotations

from typing import Protocol


class State(Protocol):
    async def start(self) -> None:
        """Connect (a shared backend); called once before the first request. Raises on an unreachable server."""
        ...

    async def get(self, key: str) -> str | None:
        """The value at ``key``, or None when absent or expired."""
        ...

    async def set(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        ...

    async def delete(self, key: str) -> None:
        ...

    async def compare_and_set(self, key: str, expected: str | None, value: str, *, ttl_s: float | None = None) -> bool:
        """Set ``key`` to ``value`` only if it currently holds ``expected`` (None: absent). True if set."""
        ...

    async def incr(self, key: str, by: int = 1, *, ttl_s: float | None = None) -> int:
        """Add ``by`` to the integer at ``key`` (absent counts as 0) and return the new value."""
        ...

    async def incr_if(self, key: str, by: int, limit: int, *, ttl_s: float | None = None) -> int | None:
        """Add ``by`` to the integer at ``key`` only if the result stays <= ``limit``: the new value, or None
        (nothing changed). ``by`` may be negative (a release), which always applies and never takes the
        value below 0. A new key gets ``ttl_s``."""
        ...

    async def window_add(self, key: str, amount: float, window_s: float, *, at: float | None = None) -> float:
        """Add ``amount`` to the sliding window at ``key`` (now, or in the bucket of the earlier ``at``,
        if that bucket is still in the window); return the window's sum including it."""
        ...

    async def window_add_if(self, key: str, amount: float, window_s: float, limit: float) -> float | None:
        """Add ``amount`` now only if the window's sum stays <= ``limit``: the new sum, or None."""
        ...

    def clock(self) -> float:
        """The backend's notion of now, in seconds (what ``at`` values are measured in)."""
        ...

    async def window_sum(self, key: str, window_s: float) -> float:
        """The sum of what was added to ``key`` in the last ``window_s`` seconds."""
        ...

    async def close(self) -> None:
        ...
