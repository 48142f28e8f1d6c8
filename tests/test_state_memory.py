"""Unit tests for the in-process state backend (``bastion.state.memory.MemoryState``).

Every test drives a fake clock, so nothing sleeps; async methods are run with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.state import MemoryState, State, open_state

T = TypeVar("T")


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def run(aw: Awaitable[T]) -> T:
    async def _wrap() -> T:
        return await aw

    return asyncio.run(_wrap())


def make(t: float = 1000.0) -> tuple[MemoryState, FakeClock]:
    clock = FakeClock(t)
    return MemoryState(clock=clock), clock


# ---- plain values -----------------------------------------------------------------------------


def test_get_set_delete() -> None:
    s, _ = make()

    async def go() -> None:
        assert await s.get("k") is None
        await s.set("k", "v1")
        assert await s.get("k") == "v1"
        await s.set("k", "v2")  # overwrite
        assert await s.get("k") == "v2"
        await s.set("other", "x")
        await s.delete("k")
        assert await s.get("k") is None
        assert await s.get("other") == "x"  # delete touches only its key
        await s.delete("never-set")  # deleting an absent key is fine

    run(go())


def test_value_without_ttl_never_expires() -> None:
    s, clock = make()
    run(s.set("k", "v"))
    clock.advance(10**9)
    assert run(s.get("k")) == "v"


def test_ttl_expiry() -> None:
    s, clock = make()
    run(s.set("k", "v", ttl_s=5))
    clock.advance(4.999)
    assert run(s.get("k")) == "v"
    clock.advance(0.001)  # exactly ttl elapsed: gone
    assert run(s.get("k")) is None
    clock.advance(100)
    assert run(s.get("k")) is None


def test_set_again_replaces_ttl() -> None:
    s, clock = make()
    run(s.set("k", "v", ttl_s=5))
    clock.advance(4)
    run(s.set("k", "v2", ttl_s=5))  # refreshed: lives until +9
    clock.advance(4)
    assert run(s.get("k")) == "v2"
    run(s.set("k", "v3"))  # no ttl: lives forever
    clock.advance(1000)
    assert run(s.get("k")) == "v3"


def test_zero_ttl_is_immediately_expired() -> None:
    s, _ = make()
    run(s.set("k", "v", ttl_s=0))
    assert run(s.get("k")) is None


# ---- compare_and_set --------------------------------------------------------------------------


def test_cas_absent_to_value() -> None:
    s, _ = make()
    assert run(s.compare_and_set("k", None, "a")) is True
    assert run(s.get("k")) == "a"
    # now present: "absent" no longer matches
    assert run(s.compare_and_set("k", None, "b")) is False
    assert run(s.get("k")) == "a"


def test_cas_with_expected_value() -> None:
    s, _ = make()
    run(s.set("k", "a"))
    assert run(s.compare_and_set("k", "wrong", "b")) is False
    assert run(s.get("k")) == "a"
    assert run(s.compare_and_set("k", "a", "b")) is True
    assert run(s.get("k")) == "b"


def test_cas_expected_value_on_absent_key_fails() -> None:
    s, _ = make()
    assert run(s.compare_and_set("k", "a", "b")) is False
    assert run(s.get("k")) is None


def test_cas_expired_key_counts_as_absent() -> None:
    s, clock = make()
    run(s.set("k", "old", ttl_s=1))
    clock.advance(1)
    assert run(s.compare_and_set("k", "old", "x")) is False  # it is gone, not "old"
    assert run(s.compare_and_set("k", None, "new")) is True
    assert run(s.get("k")) == "new"


def test_cas_ttl_applies_to_new_value() -> None:
    s, clock = make()
    assert run(s.compare_and_set("slot", None, "1", ttl_s=3)) is True
    clock.advance(2.9)
    assert run(s.compare_and_set("slot", None, "1", ttl_s=3)) is False
    clock.advance(0.1)
    assert run(s.compare_and_set("slot", None, "1", ttl_s=3)) is True


def test_cas_is_exclusive_among_concurrent_callers() -> None:
    s, _ = make()

    async def go() -> list[bool]:
        return list(await asyncio.gather(*(s.compare_and_set("slot", None, str(i)) for i in range(50))))

    results = run(go())
    assert results.count(True) == 1


# ---- incr -------------------------------------------------------------------------------------


def test_incr_from_absent_and_by() -> None:
    s, _ = make()

    async def go() -> None:
        assert await s.incr("n") == 1
        assert await s.incr("n") == 2
        assert await s.incr("n", 5) == 7
        assert await s.incr("n", -10) == -3
        assert await s.get("n") == "-3"
        assert await s.incr("m", 4) == 4

    run(go())


def test_incr_of_value_set_as_string_integer() -> None:
    s, _ = make()
    run(s.set("n", "41"))
    assert run(s.incr("n")) == 42


def test_incr_of_non_integer_raises() -> None:
    s, _ = make()
    run(s.set("n", "abc"))
    with pytest.raises(ValueError):
        run(s.incr("n"))


def test_incr_with_ttl_on_new_key_expires() -> None:
    s, clock = make()
    assert run(s.incr("n", ttl_s=10)) == 1
    clock.advance(9.5)
    assert run(s.get("n")) == "1"
    clock.advance(0.5)
    assert run(s.get("n")) is None
    assert run(s.incr("n")) == 1  # expired counts as absent: starts again from 0


def test_incr_without_ttl_keeps_existing_expiry() -> None:
    s, clock = make()
    run(s.incr("n", ttl_s=10))
    clock.advance(6)
    assert run(s.incr("n")) == 2  # no ttl given: the key still expires at +10
    clock.advance(3.9)
    assert run(s.get("n")) == "2"
    clock.advance(0.1)
    assert run(s.get("n")) is None


def test_incr_without_ttl_keeps_no_expiry() -> None:
    s, clock = make()
    run(s.set("n", "1"))
    run(s.incr("n"))
    clock.advance(10**6)
    assert run(s.get("n")) == "2"


# ---- sliding windows --------------------------------------------------------------------------


def test_window_sum_of_unknown_key_is_zero() -> None:
    s, _ = make()
    assert run(s.window_sum("nothing", 60)) == 0.0


def test_window_add_returns_running_total() -> None:
    s, _ = make()

    async def go() -> None:
        assert await s.window_add("w", 1, 10) == 1
        assert await s.window_add("w", 2.5, 10) == 3.5
        assert await s.window_sum("w", 10) == 3.5

    run(go())


def test_window_old_amounts_drop_out() -> None:
    s, clock = make(1000.0)

    async def go() -> None:
        await s.window_add("w", 1, 10)  # bucket 1000
        clock.advance(5)
        await s.window_add("w", 2, 10)  # bucket 1005
        clock.advance(4.9)  # t=1009.9: both in the last 10 one-second buckets
        assert await s.window_sum("w", 10) == 3
        clock.advance(0.1)  # t=1010: bucket 1000 has left the window
        assert await s.window_sum("w", 10) == 2
        clock.advance(5)  # t=1015: bucket 1005 has left too
        assert await s.window_sum("w", 10) == 0
        assert await s.window_add("w", 7, 10) == 7

    run(go())


def test_window_negative_amounts() -> None:
    s, clock = make()

    async def go() -> None:
        await s.window_add("w", 10, 30)
        clock.advance(1)
        assert await s.window_add("w", -4, 30) == 6
        assert await s.window_add("w", -10, 30) == -4
        clock.advance(30)
        assert await s.window_sum("w", 30) == 0

    run(go())


def test_window_fractional_window_is_at_least_one_bucket() -> None:
    s, clock = make(1000.2)

    async def go() -> None:
        await s.window_add("w", 1, 0.5)
        clock.advance(0.7)  # same one-second bucket (1000)
        assert await s.window_sum("w", 0.5) == 1
        clock.advance(0.2)  # bucket 1001
        assert await s.window_sum("w", 0.5) == 0

    run(go())


def test_window_long_run_keeps_only_recent_total() -> None:
    """A window fed every second for a long time sums exactly the last ``window_s`` seconds."""
    s, clock = make(0.0)

    async def go() -> None:
        for _ in range(500):
            await s.window_add("w", 1, 20)
            clock.advance(1)
        clock.advance(-1)  # back to the second of the last add
        assert await s.window_sum("w", 20) == 20

    run(go())


def test_window_many_keys_are_independent() -> None:
    s, clock = make()

    async def go() -> None:
        for i in range(1000):
            await s.window_add(f"k{i}", i, 60)
        clock.advance(30)
        for i in range(0, 1000, 2):
            await s.window_add(f"k{i}", 1, 60)
        for i in range(1000):
            assert await s.window_sum(f"k{i}", 60) == i + (1 if i % 2 == 0 else 0)
        clock.advance(30)  # the first adds have left the 60 s window
        for i in range(1000):
            assert await s.window_sum(f"k{i}", 60) == (1 if i % 2 == 0 else 0)

    run(go())


def test_windows_and_values_do_not_collide() -> None:
    s, _ = make()

    async def go() -> None:
        await s.set("k", "v")
        await s.window_add("k", 3, 10)
        assert await s.get("k") == "v"
        assert await s.window_sum("k", 10) == 3

    run(go())


def test_close_clears_everything() -> None:
    s, _ = make()

    async def go() -> None:
        await s.set("k", "v")
        await s.window_add("w", 1, 10)
        await s.close()
        assert await s.get("k") is None
        assert await s.window_sum("w", 10) == 0

    run(go())


events_st = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=4, allow_nan=False),  # time since the previous event
        st.integers(min_value=-50, max_value=100),  # amount (integral, so sums are exact)
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=10**6, allow_nan=False),
    events=events_st,
    window_s=st.floats(min_value=0.01, max_value=30, allow_nan=False),
    query_after=st.floats(min_value=0, max_value=40, allow_nan=False),
)
def test_window_sum_matches_brute_force(
    start: float, events: list[tuple[float, int]], window_s: float, query_after: float
) -> None:
    """window_sum == the sum of every (time, amount) whose one-second bucket lies within the window."""
    s, clock = make(start)
    span = max(1, math.ceil(window_s))

    def brute(now: float, seen: list[tuple[float, int]]) -> float:
        return float(sum(a for t, a in seen if math.floor(t) > math.floor(now) - span))

    async def go() -> None:
        seen: list[tuple[float, int]] = []
        for dt, amount in events:
            clock.advance(dt)
            seen.append((clock.t, amount))
            assert await s.window_add("w", amount, window_s) == brute(clock.t, seen)
        clock.advance(query_after)
        assert await s.window_sum("w", window_s) == brute(clock.t, seen)

    run(go())


# ---- open_state -------------------------------------------------------------------------------


def test_open_state_memory() -> None:
    st_ = open_state("memory://")
    assert isinstance(st_, MemoryState)
    s: State = st_
    run(s.set("k", "v"))
    assert run(s.get("k")) == "v"


@pytest.mark.parametrize("url", ["postgres://localhost/x", "memory", "", "memory:///x", "MEMORY://", "redis:/x"])
def test_open_state_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError) as e:
        open_state(url)
    msg = str(e.value)
    assert repr(url) in msg
    assert "memory://" in msg
    assert "redis://" in msg and "rediss://" in msg
