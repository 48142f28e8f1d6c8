"""Shared mutable state (breakers, budgets, rate-limit windows): ``memory://`` in process, Redis for replicas."""

from __future__ import annotations

import asyncio

from .base import State
from .memory import MemoryState

_URL_FORMS = "memory:// (one process) or redis://host:port/db / rediss://host:port/db (shared by replicas)"


def open_state(url: str) -> State:
    if url == "memory://":
        return MemoryState()
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisState

        return RedisState(url)
    raise ValueError(f"unsupported state.url {url!r}: use {_URL_FORMS}")


def check_state(url: str) -> None:
    """Raise ``SystemExit`` with a clear message when the state server at ``url`` cannot be reached."""
    if url == "memory://":
        return
    from .redis import RedisState, StateUnavailable

    async def probe() -> None:
        st = RedisState(url)
        try:
            await st.start()
        finally:
            await st.close()

    try:
        asyncio.run(probe())
    except StateUnavailable as e:
        raise SystemExit(f"error: {e}") from None


__all__ = ["MemoryState", "State", "check_state", "open_state"]
