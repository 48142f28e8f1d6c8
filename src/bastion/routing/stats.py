"""What this replica has observed of each deployment: requests in flight, smoothed time to first token,
and a window of recent first-token times per alias (the hedging delay is a percentile of it).

These are local on purpose: load and latency as seen from this process is what balancing should use.
"""

from __future__ import annotations

import math
from collections import deque


class LatencyWindow:
    """The last ``size`` observations; percentiles are recomputed at most every ``size // 16`` new ones."""

    __slots__ = ("values", "_sorted", "_stale")

    def __init__(self, size: int = 512) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []
        self._stale = 0

    def add(self, value: float) -> None:
        self.values.append(value)
        self._stale += 1

    def __len__(self) -> int:
        return len(self.values)

    def percentile(self, p: float) -> float | None:
        if not self.values:
            return None
        if self._stale > max(1, (self.values.maxlen or 512) // 16) or len(self._sorted) != len(self.values):
            self._sorted = sorted(self.values)
            self._stale = 0
        s = self._sorted
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s) / 100) - 1))]


class DeploymentStats:
    ALPHA = 0.2  # weight of the newest observation in the moving average

    def __init__(self) -> None:
        self.inflight: dict[str, int] = {}
        self.ttft_ewma: dict[str, float] = {}
        self.alias_ttft: dict[str, LatencyWindow] = {}

    def begin(self, dep: str) -> None:
        self.inflight[dep] = self.inflight.get(dep, 0) + 1

    def end(self, dep: str) -> None:
        self.inflight[dep] = max(0, self.inflight.get(dep, 0) - 1)

    def observe_ttft(self, alias: str, dep: str, seconds: float) -> None:
        prev = self.ttft_ewma.get(dep)
        self.ttft_ewma[dep] = seconds if prev is None else prev + self.ALPHA * (seconds - prev)
        w = self.alias_ttft.get(alias)
        if w is None:
            w = self.alias_ttft[alias] = LatencyWindow()
        w.add(seconds)

    def observe_failure(self, dep: str, seconds: float) -> None:
        """A failed attempt counts as slow for lowest-latency balancing (at least what it cost)."""
        prev = self.ttft_ewma.get(dep)
        worst = max(seconds, prev or 0.0) * 2
        self.ttft_ewma[dep] = worst if prev is None else prev + self.ALPHA * (worst - prev)

    def ttft_percentile(self, alias: str, p: float, min_samples: int) -> float | None:
        w = self.alias_ttft.get(alias)
        if w is None or len(w) < min_samples:
            return None
        return w.percentile(p)
