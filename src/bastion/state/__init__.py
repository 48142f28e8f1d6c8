"""Shared mutable state (breakers, budgets, rate-limit windows): ``memory://`` now, Redis for replicas."""

from __future__ import annotations

from .base import State
from .memory import MemoryState


def open_state(url: str) -> State:
    if url == "memory://":
        return MemoryState()
    raise ValueError(f"unsupported state.url {url!r}: use memory://")


__all__ = ["MemoryState", "State", "open_state"]
