"""The in-process state backend (``memory://``): one replica, no server, nothing to configure.

Every operation runs to completion without yielding to the event loop, so each one is atomic with
respect to the other requests of this process, which is what the Redis backend gives across replicas.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

_BUCKET_S = 1.0


class _Window:
    """Per-second buckets, oldest first, with a running total: adding and summing are O(1) amortised."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[float]] = deque()  # [bucket number, sum]
        self.total = 0.0

    def slide(self, now_bucket: int, span: int) -> None:
        low = now_bucket - span
        b = self.buckets
        while b and b[0][0] <= low:
            self.total -= b.popleft()[1]
        if not b:
            self.total = 0.0  # no float residue once empty

    def add(self, bucket: int, amount: float) -> None:
        b = self.buckets
        if b and b[-1][0] == bucket:
            b[-1][1] += amount
        elif not b or b[-1][0] < bucket:
            b.append([bucket, amount])
        else:  # an earlier bucket (a settlement): only while it is still in the window
            for entry in reversed(b):
                if entry[0] == bucket:
                    entry[1] += amount
                    break
                if entry[0] < bucket:
                    return
            else:
                return
        self.total += amount


class MemoryState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}  # key -> (value, expires_at or inf)
        self._windows: dict[str, _Window] = {}

    async def start(self) -> None:
        return None

    # ---- values ------------------------------------------------------------------------------
    def _live(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._values[key]
            return None
        return item[0]

    def _expiry(self, ttl_s: float | None) -> float:
        return math.inf if ttl_s is None else self._clock() + ttl_s

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        self._values[key] = (value, self._expiry(ttl_s))

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    async def compare_and_set(self, key: str, expected: str | None, value: str, *, ttl_s: float | None = None) -> bool:
        if self._live(key) != expected:
            return False
        self._values[key] = (value, self._expiry(ttl_s))
        return True

    async def incr(self, key: str, by: int = 1, *, ttl_s: float | None = None) -> int:
        current = self._live(key)
        n = (int(current) if current is not None else 0) + by
        expires = self._values[key][1] if current is not None and ttl_s is None else self._expiry(ttl_s)
        self._values[key] = (str(n), expires)
        return n

    async def incr_if(self, key: str, by: int, limit: int, *, ttl_s: float | None = None) -> int | None:
        current = self._live(key)
        n = (int(current) if current is not None else 0) + by
        if by > 0 and n > limit:
            return None
        n = max(0, n)
        expires = self._values[key][1] if current is not None else self._expiry(ttl_s)
        self._values[key] = (str(n), expires)
        return n

    # ---- sliding windows ---------------------------------------------------------------------
    async def window_add(self, key: str, amount: float, window_s: float, *, at: float | None = None) -> float:
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window()
        now_bucket = int(self._clock() // _BUCKET_S)
        w.slide(now_bucket, max(1, math.ceil(window_s / _BUCKET_S)))
        w.add(now_bucket if at is None else min(now_bucket, int(at // _BUCKET_S)), amount)
        return w.total

    async def window_add_if(self, key: str, amount: float, window_s: float, limit: float) -> float | None:
        if await self.window_sum(key, window_s) + amount > limit:
            return None
        return await self.window_add(key, amount, window_s)

    def clock(self) -> float:
        return self._clock()

    async def window_sum(self, key: str, window_s: float) -> float:
        w = self._windows.get(key)
        if w is None:
            return 0.0
        w.slide(int(self._clock() // _BUCKET_S), max(1, math.ceil(window_s / _BUCKET_S)))
        return w.total

    async def close(self) -> None:
        self._values.clear()
        self._windows.clear()
