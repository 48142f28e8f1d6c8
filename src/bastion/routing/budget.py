"""Retry and hedge budgets: extra attempts allowed as a fraction of recent requests (plus a small floor),
counted in sliding windows in ``state/`` so that retries can never multiply an outage.
"""

from __future__ import annotations

from bastion.state import State


class Budget:
    """``spend`` succeeds while extra attempts in the window stay under ``ratio × requests + floor``."""

    def __init__(self, state: State, prefix: str) -> None:
        self.state = state
        self.prefix = prefix

    async def note_request(self, key: str, window_s: float) -> None:
        await self.state.window_add(f"{self.prefix}:{key}:req", 1, window_s)

    async def spend(self, key: str, *, ratio: float, floor_per_s: float, window_s: float) -> bool:
        reqs = await self.state.window_sum(f"{self.prefix}:{key}:req", window_s)
        spent = await self.state.window_sum(f"{self.prefix}:{key}:extra", window_s)
        if spent + 1 > ratio * reqs + floor_per_s * window_s + 1e-9:
            return False
        await self.state.window_add(f"{self.prefix}:{key}:extra", 1, window_s)
        return True

    async def usage(self, key: str, window_s: float) -> tuple[float, float]:
        """(requests, extra attempts) in the window, for tests and the admin view."""
        reqs = await self.state.window_sum(f"{self.prefix}:{key}:req", window_s)
        return reqs, await self.state.window_sum(f"{self.prefix}:{key}:extra", window_s)
