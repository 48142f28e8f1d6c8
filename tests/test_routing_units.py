"""Unit tests for ``bastion.routing``: breakers, budgets, rate limits, failure classes, stats and the router.

State-backed pieces run over a ``MemoryState`` with a fake clock, so nothing sleeps; nothing is contacted
(the ``sim`` providers point at a closed port and are never called).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable
from fractions import Fraction
from typing import Any, TypeVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.config.model import BastionConfig
from bastion.config.reliability import BreakerConfig
from bastion.errors import (
    BastionError,
    InvalidRequest,
    ModelNotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bastion.routing import (
    Breakers,
    Budget,
    DeploymentLimits,
    DeploymentStats,
    Failure,
    Gate,
    LatencyWindow,
    Policy,
    Pool,
    Router,
    classify,
)
from bastion.routing.classify import backoff_s, counts_against_breaker, retry_after_s
from bastion.state import MemoryState

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


# =================================================================================================
# breaker.py
# =================================================================================================


class BreakerRig:
    """Breakers over a fake clock. Without ``pools`` each deployment stands alone, and may be ejected
    (``max_ejection_percent`` 100 unless given): the state machine of one breaker."""

    def __init__(self, pools: dict[str, tuple[str, ...]] | None = None, **cfg: Any) -> None:
        self.clock = FakeClock()
        self.state = MemoryState(clock=self.clock)
        self.changes: list[tuple[str, str]] = []
        base: dict[str, Any] = dict(
            consecutive_failures=3, failure_rate=0.5, window_s=30, min_requests=1000, open_s=10, probe_timeout_s=5,
            max_ejection_percent=100 if pools is None else 50,
        )
        base.update(cfg)
        self.cfg = BreakerConfig(**base)
        self.pools = [Pool.of(alias, members, self.cfg) for alias, members in (pools or {}).items()]
        self.breakers = Breakers(self.state, on_change=lambda dep, to: self.changes.append((dep, to)), pools=self.pools)

    def reopens_at(self, dep: str = "d") -> float | None:
        return run(self.breakers.reopens_at(dep, self.cfg))

    def gate(self, dep: str = "d") -> Gate:
        return run(self.breakers.gate(dep, self.cfg))

    def ok(self, dep: str = "d", *, probe: bool = False) -> None:
        run(self.breakers.record(dep, self.cfg, ok=True, probe=probe))

    def fail(self, dep: str = "d", *, probe: bool = False) -> None:
        run(self.breakers.record(dep, self.cfg, ok=False, probe=probe))

    def trip(self, dep: str = "d") -> None:
        for _ in range(self.cfg.consecutive_failures):
            self.fail(dep)
        assert self.gate(dep) is Gate.OPEN

    def states(self) -> list[str]:
        return [to for _, to in self.changes]


def test_breaker_closed_by_default() -> None:
    r = BreakerRig()
    assert r.gate() is Gate.CLOSED
    assert r.reopens_at() is None
    assert r.changes == []


def test_breaker_opens_after_consecutive_failures() -> None:
    r = BreakerRig(consecutive_failures=3)
    r.fail()
    r.fail()
    assert r.gate() is Gate.CLOSED
    assert r.changes == []
    r.fail()
    assert r.gate() is Gate.OPEN
    assert r.changes == [("d", "open")]
    assert r.reopens_at() == r.clock.t + 10  # the open period, on the state's clock


def test_breaker_success_resets_the_run() -> None:
    r = BreakerRig(consecutive_failures=3)
    r.fail()
    r.fail()
    r.ok()
    r.fail()
    r.fail()
    assert r.gate() is Gate.CLOSED
    r.fail()
    assert r.gate() is Gate.OPEN


def test_breaker_opens_by_failure_rate() -> None:
    r = BreakerRig(consecutive_failures=100, failure_rate=0.5, min_requests=10)
    for _ in range(4):
        r.ok()
        r.fail()
    r.ok()
    assert r.gate() is Gate.CLOSED  # 9 attempts: below min_requests
    r.fail()  # 10 attempts, 5 failed: 50 %
    assert r.gate() is Gate.OPEN
    assert r.states() == ["open"]


def test_breaker_rate_below_threshold_stays_closed() -> None:
    r = BreakerRig(consecutive_failures=100, failure_rate=0.5, min_requests=10)
    for _ in range(20):  # one failure in three: 33 %
        r.ok()
        r.ok()
        r.fail()
    assert r.gate() is Gate.CLOSED
    assert r.changes == []


def test_breaker_rate_only_counts_the_window() -> None:
    r = BreakerRig(consecutive_failures=100, failure_rate=0.5, min_requests=10, window_s=30)
    for _ in range(9):  # 9 attempts, all failed: still too few to judge
        r.fail()
    assert r.gate() is Gate.CLOSED
    r.clock.advance(31)  # ... and now they have left the window
    for _ in range(3):
        r.ok()
    r.fail()  # counted with the old ones this would be 10 of 13
    assert r.gate() is Gate.CLOSED


def test_breaker_old_successes_do_not_dilute_the_rate() -> None:
    r = BreakerRig(consecutive_failures=100, failure_rate=0.5, min_requests=10, window_s=30)
    for _ in range(20):
        r.ok()
    r.clock.advance(31)
    for _ in range(5):
        r.fail()
        r.ok()
    assert r.gate() is Gate.CLOSED
    r.fail()  # 6 of the 11 attempts in the window failed (6 of 31 if the old ones still counted)
    assert r.gate() is Gate.OPEN


def test_breaker_open_then_exactly_one_probe() -> None:
    r = BreakerRig(open_s=10)
    r.trip()
    r.clock.advance(9.9)
    assert r.gate() is Gate.OPEN
    r.clock.advance(0.1)
    assert r.gate() is Gate.PROBE
    assert r.gate() is Gate.OPEN  # the probe slot is taken
    assert r.gate() is Gate.OPEN
    assert r.states() == ["open", "half_open"]


def test_breaker_concurrent_callers_get_one_probe() -> None:
    r = BreakerRig(open_s=10)
    r.trip()
    r.clock.advance(10)

    async def many() -> list[Gate]:
        return list(await asyncio.gather(*(r.breakers.gate("d", r.cfg) for _ in range(20))))

    gates = run(many())
    assert gates.count(Gate.PROBE) == 1
    assert gates.count(Gate.OPEN) == 19


def test_breaker_probe_success_closes() -> None:
    r = BreakerRig()
    r.trip()
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE
    r.ok(probe=True)
    assert r.gate() is Gate.CLOSED
    assert r.gate() is Gate.CLOSED
    assert r.reopens_at() is None
    assert r.changes == [("d", "open"), ("d", "half_open"), ("d", "closed")]


def test_breaker_probe_failure_reopens() -> None:
    r = BreakerRig(open_s=10)
    r.trip()
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE
    r.fail(probe=True)
    assert r.gate() is Gate.OPEN
    assert r.reopens_at() is not None
    assert r.states() == ["open", "half_open", "open"]
    r.clock.advance(9.9)
    assert r.gate() is Gate.OPEN  # a full new open period
    r.clock.advance(0.1)
    assert r.gate() is Gate.PROBE  # and the slot was released for the next probe


def test_breaker_release_probe_frees_the_slot() -> None:
    r = BreakerRig()
    r.trip()
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE
    assert r.gate() is Gate.OPEN
    run(r.breakers.release_probe("d"))
    assert r.gate() is Gate.PROBE
    assert r.gate() is Gate.OPEN


def test_breaker_probe_slot_expires_after_probe_timeout() -> None:
    r = BreakerRig(open_s=10, probe_timeout_s=5)
    r.trip()
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE
    r.clock.advance(4.9)
    assert r.gate() is Gate.OPEN
    r.clock.advance(0.1)
    assert r.gate() is Gate.PROBE  # the first probe never reported: another one may go


def test_breaker_non_probe_success_does_not_close() -> None:
    """A request that was already in flight when the breaker opened does not close it by succeeding."""
    r = BreakerRig()
    r.trip()
    r.ok()
    assert r.gate() is Gate.OPEN
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE


def test_breaker_failures_while_open_do_not_reopen_or_extend() -> None:
    r = BreakerRig(consecutive_failures=3, open_s=10)
    r.trip()
    until = r.reopens_at()
    r.clock.advance(5)
    for _ in range(10):  # in-flight requests failing late
        r.fail()
    assert r.states() == ["open"]
    assert r.reopens_at() == until
    r.clock.advance(5)
    assert r.gate() is Gate.PROBE


def test_breaker_after_closing_old_failures_do_not_reopen_by_rate() -> None:
    r = BreakerRig(consecutive_failures=5, failure_rate=0.5, min_requests=4, window_s=30, open_s=10)
    r.ok()
    r.fail()
    r.ok()
    r.fail()  # 4 attempts, 50 % failed
    assert r.gate() is Gate.OPEN
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE
    r.ok(probe=True)
    assert r.gate() is Gate.CLOSED
    # The window still holds the failures that opened it: one more would make 3 of 6 (50 %).
    r.fail()
    assert r.gate() is Gate.CLOSED
    # ... but failures in a row still open it.
    r.fail()
    r.fail()
    r.fail()
    assert r.gate() is Gate.CLOSED
    r.fail()  # 5 in a row
    assert r.gate() is Gate.OPEN
    assert r.states() == ["open", "half_open", "closed", "open"]


def test_breaker_rate_counts_again_once_fresh_period_is_over() -> None:
    r = BreakerRig(consecutive_failures=100, failure_rate=0.5, min_requests=4, window_s=30, open_s=10)
    for _ in range(4):
        r.fail()
    assert r.gate() is Gate.OPEN
    r.clock.advance(10)
    assert r.gate() is Gate.PROBE
    r.ok(probe=True)
    r.clock.advance(30)  # a whole window later: old failures gone, the grace period over
    r.ok()
    r.fail()
    r.ok()
    assert r.gate() is Gate.CLOSED
    r.fail()  # 4 fresh attempts, 50 % failed
    assert r.gate() is Gate.OPEN


def test_breaker_disabled_never_opens() -> None:
    r = BreakerRig(enabled=False, consecutive_failures=1, min_requests=1)
    for _ in range(50):
        r.fail()
    assert r.gate() is Gate.CLOSED
    assert r.changes == []


def test_breakers_are_per_deployment() -> None:
    r = BreakerRig()
    r.trip("a")
    assert r.gate("a") is Gate.OPEN
    assert r.gate("b") is Gate.CLOSED
    r.fail("b")
    assert r.gate("b") is Gate.CLOSED
    assert r.changes == [("a", "open")]


def test_breakers_without_on_change_callback() -> None:
    clock = FakeClock()
    b = Breakers(MemoryState(clock=clock))
    cfg = BreakerConfig(consecutive_failures=1, open_s=1, max_ejection_percent=100)

    async def go() -> None:
        await b.record("d", cfg, ok=False, probe=False)
        assert await b.gate("d", cfg) is Gate.OPEN
        clock.advance(1)
        assert await b.gate("d", cfg) is Gate.PROBE
        await b.record("d", cfg, ok=True, probe=True)
        assert await b.gate("d", cfg) is Gate.CLOSED

    run(go())


# ---- the ejection cap (breaker.max_ejection_percent) -----------------------------------------------


def test_pool_cap_is_a_share_of_the_pool_rounded_down() -> None:
    def cap(n: int, pct: float) -> int:
        return Pool.of("m", [f"d{i}" for i in range(n)], BreakerConfig(max_ejection_percent=pct)).max_ejected

    assert BreakerConfig().max_ejection_percent == 50
    assert [cap(n, 50) for n in (1, 2, 3, 4, 5)] == [0, 1, 1, 2, 2]
    assert [cap(n, 100) for n in (1, 2, 3)] == [1, 2, 3]
    assert cap(3, 0) == 0 and cap(10, 10) == 1 and cap(3, 66.67) == 2
    assert Pool.of("m", ["a", "a", "b"], BreakerConfig()).members == ("a", "b")
    with pytest.raises(ValidationError):
        BreakerConfig(max_ejection_percent=101)


def test_two_deployments_at_most_one_is_ever_open() -> None:
    r = BreakerRig(pools={"m": ("a", "b")})
    r.trip("a")
    for _ in range(20):  # b fails as often and as badly: it keeps serving
        r.fail("b")
    assert r.gate("b") is Gate.CLOSED
    assert run(r.breakers.ejected("m")) == ["a"]
    assert r.changes == [("a", "open")]


def test_a_lone_deployment_is_never_ejected_at_the_default_cap() -> None:
    r = BreakerRig(pools={"solo": ("d",)})
    for _ in range(50):
        r.fail("d")
    assert r.gate("d") is Gate.CLOSED and r.changes == []
    fail_fast = BreakerRig(pools={"solo": ("d",)}, max_ejection_percent=100)
    fail_fast.trip("d")  # the operator's choice: fail fast with circuit_open


def test_a_worse_deployment_swaps_places_with_the_one_out() -> None:
    r = BreakerRig(pools={"m": ("a", "b")}, consecutive_failures=3)
    for _ in range(7):  # a: 3 in a row out of 10 attempts, a 30% failure ratio when it trips
        r.ok("a")
    r.trip("a")
    r.trip("b")  # b: 3 of 3 failed (100%): it goes out, and a comes back at once
    assert r.gate("a") is Gate.CLOSED and r.gate("b") is Gate.OPEN
    assert run(r.breakers.ejected("m")) == ["b"]
    assert r.changes == [("a", "open"), ("a", "closed"), ("b", "open")]
    # a comes back with a clean slate: the failures that tripped it do not trip it again by themselves
    r.fail("a")
    assert r.gate("a") is Gate.CLOSED


def test_a_deployment_no_worse_than_its_peers_is_not_ejected() -> None:
    """Both fail 30%: ejecting one would move its load onto an equally bad peer, so neither goes out."""
    r = BreakerRig(pools={"m": ("a", "b")}, consecutive_failures=3, failure_rate=0.5)
    for _ in range(4):  # a and b, taking turns: 7 successes, then 3 failures in a row, each
        for outcome in [True] * 7 + [False] * 3:
            for d in "ab":
                (r.ok if outcome else r.fail)(d)
    assert r.gate("a") is Gate.CLOSED and r.gate("b") is Gate.CLOSED and r.changes == []


def test_an_outlier_is_ejected_and_a_failing_pool_still_sheds_up_to_its_cap() -> None:
    r = BreakerRig(pools={"m": ("a", "b")}, consecutive_failures=3, failure_rate=0.5)
    for _ in range(7):
        r.ok("b")
    for _ in range(3):
        r.fail("b")  # b: 30%
    r.trip("a")  # a: 100%, clearly worse than b
    assert run(r.breakers.ejected("m")) == ["a"]
    broken = BreakerRig(pools={"m": ("a", "b")}, consecutive_failures=3, failure_rate=0.5)
    for _ in range(2):
        broken.fail("b")
    broken.ok("b")
    broken.trip("a")  # b fails at least failure_rate too: the pool is failing, a may go (cap: 1)
    assert run(broken.breakers.ejected("m")) == ["a"]
    everything_down = BreakerRig(pools={"m": ("a", "b")}, max_ejection_percent=100)
    everything_down.trip("a")
    everything_down.trip("b")  # with a cap of 100% the operator chose to fail fast when all are down
    assert run(everything_down.breakers.ejected("m")) == ["a", "b"]


def test_the_cap_frees_when_the_ejected_one_recovers() -> None:
    r = BreakerRig(pools={"m": ("a", "b")}, open_s=10)
    r.trip("a")
    for _ in range(3):
        r.fail("b")
    assert r.gate("b") is Gate.CLOSED
    r.clock.advance(10)
    assert r.gate("a") is Gate.PROBE
    r.ok("a", probe=True)
    assert run(r.breakers.ejected("m")) == []
    r.trip("b")  # now there is room
    assert run(r.breakers.ejected("m")) == ["b"]


def test_half_open_still_counts_as_out() -> None:
    r = BreakerRig(pools={"m": ("a", "b")}, open_s=10)
    r.trip("a")
    r.clock.advance(10)
    assert r.gate("a") is Gate.PROBE  # a is half-open: one probe at a time, still out of the pool
    for _ in range(10):
        r.fail("b")
    assert r.gate("b") is Gate.CLOSED
    r.fail("a", probe=True)
    assert r.gate("a") is Gate.OPEN and r.reopens_at("a") == r.clock.t + 10


def test_three_of_five_cannot_go_out_at_fifty_percent() -> None:
    r = BreakerRig(pools={"m": ("a", "b", "c", "d", "e")})
    for d in "abcde":
        for _ in range(3):
            r.fail(d)
    assert run(r.breakers.ejected("m")) == ["a", "b"]
    assert [r.gate(d) for d in "cde"] == [Gate.CLOSED] * 3


def test_a_deployment_shared_by_two_aliases_is_capped_in_each() -> None:
    r = BreakerRig(pools={"chat": ("shared", "x"), "mini": ("shared",)})
    r.trip("shared")
    assert r.gate("shared") is Gate.OPEN
    assert run(r.breakers.gate("shared", r.cfg, "chat")) is Gate.OPEN
    assert run(r.breakers.gate("shared", r.cfg, "mini")) is Gate.CLOSED  # its only deployment: kept
    assert run(r.breakers.ejected("chat")) == ["shared"] and run(r.breakers.ejected("mini")) == []


class InterleavedState:
    """A ``MemoryState`` whose every operation first yields to the event loop, a random number of times:
    each operation stays atomic, but the operations of concurrent callers interleave, as they do over a
    network backend shared by replicas."""

    def __init__(self, inner: MemoryState, rng: random.Random) -> None:
        self.inner, self.rng = inner, rng

    def clock(self) -> float:
        return self.inner.clock()

    def __getattr__(self, name: str) -> Any:
        op = getattr(self.inner, name)

        async def interleaved(*args: Any, **kw: Any) -> Any:
            for _ in range(self.rng.randrange(4)):
                await asyncio.sleep(0)
            return await op(*args, **kw)

        return interleaved


@pytest.mark.parametrize("seed", range(5))
def test_replicas_sharing_the_state_never_eject_both_of_two(seed: int) -> None:
    clock = FakeClock()
    state = InterleavedState(MemoryState(clock=clock), random.Random(seed))
    cfg = BreakerConfig(consecutive_failures=1, min_requests=1000, open_s=10)
    pools = [Pool.of("m", ("a", "b"), cfg)]
    told: dict[str, str] = {}  # what the replicas' transition events say each deployment is
    most_told_out = 0

    def on_change(dep: str, to: str) -> None:
        nonlocal most_told_out
        told[dep] = to
        most_told_out = max(most_told_out, sum(v != "closed" for v in told.values()))

    replicas = [Breakers(state, on_change, pools=pools) for _ in range(4)]  # type: ignore[arg-type]
    most_out = 0

    async def watch(stop: asyncio.Event) -> None:
        nonlocal most_out
        while not stop.is_set():
            most_out = max(most_out, len(await replicas[0].ejected("m")))
            await asyncio.sleep(0)

    async def storm() -> None:
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(watch(stop))
        for round_ in range(3):  # failures everywhere, then probes that succeed, then failures again
            await asyncio.gather(*(b.record(d, cfg, ok=False, probe=False) for b in replicas for d in ("a", "b")
                                   for _ in range(5)))
            clock.advance(10)
            gates = await asyncio.gather(*(b.gate(d, cfg, "m") for b in replicas for d in ("a", "b")))
            assert gates.count(Gate.PROBE) <= 1, round_
            if Gate.PROBE in gates:
                i = gates.index(Gate.PROBE)
                await replicas[i // 2].record(("a", "b")[i % 2], cfg, ok=True, probe=True)
        stop.set()
        await watcher

    run(storm())
    assert most_out == 1 and most_told_out == 1
    assert sorted(d for d, v in told.items() if v != "closed") == run(replicas[1].ejected("m"))


def test_ejection_cap_ignores_deployments_that_left_the_config() -> None:
    r = BreakerRig(pools={"m": ("a", "b")})
    old = Breakers(r.state, pools=[Pool.of("m", ("gone", "b"), r.cfg)])  # a config from before a reload
    for _ in range(3):
        run(old.record("gone", r.cfg, ok=False, probe=False))
    assert run(old.ejected("m")) == ["gone"]
    r.trip("a")  # "gone" is not in this pool: it takes no room
    assert run(r.breakers.ejected("m")) == ["a"]


# =================================================================================================
# budget.py
# =================================================================================================


def test_budget_allows_ratio_times_requests_plus_floor() -> None:
    clock = FakeClock()
    b = Budget(MemoryState(clock=clock), "retry")

    async def go() -> None:
        for _ in range(10):
            await b.note_request("d", 10)
        # 0.2 × 10 requests + 0.1/s × 10 s = 3 extra attempts
        got = [await b.spend("d", ratio=0.2, floor_per_s=0.1, window_s=10) for _ in range(5)]
        assert got == [True, True, True, False, False]
        assert await b.usage("d", 10) == (10, 3)  # refusals are not counted as spent

    run(go())


def test_budget_grows_with_requests() -> None:
    clock = FakeClock()
    b = Budget(MemoryState(clock=clock), "retry")

    async def go() -> None:
        assert await b.spend("d", ratio=0.5, floor_per_s=0, window_s=10) is False  # nothing yet
        await b.note_request("d", 10)
        assert await b.spend("d", ratio=0.5, floor_per_s=0, window_s=10) is False  # 0.5 < 1
        await b.note_request("d", 10)
        assert await b.spend("d", ratio=0.5, floor_per_s=0, window_s=10) is True  # 1 allowed
        assert await b.spend("d", ratio=0.5, floor_per_s=0, window_s=10) is False

    run(go())


def test_budget_floor_alone() -> None:
    b = Budget(MemoryState(clock=FakeClock()), "hedge")

    async def go() -> None:
        got = [await b.spend("d", ratio=0.2, floor_per_s=0.5, window_s=10) for _ in range(7)]
        assert got.count(True) == 5  # 0.5/s × 10 s

    run(go())


def test_budget_restored_as_window_slides() -> None:
    clock = FakeClock()
    b = Budget(MemoryState(clock=clock), "retry")
    kw = dict(ratio=0.0, floor_per_s=0.2, window_s=10)  # 2 per window

    async def go() -> None:
        assert await b.spend("d", **kw) is True
        clock.advance(5)
        assert await b.spend("d", **kw) is True
        assert await b.spend("d", **kw) is False
        clock.advance(5)  # the first spend left the window
        assert await b.spend("d", **kw) is True
        assert await b.spend("d", **kw) is False
        clock.advance(10)  # everything left the window
        assert await b.usage("d", 10) == (0, 0)
        assert await b.spend("d", **kw) is True
        assert await b.spend("d", **kw) is True
        assert await b.spend("d", **kw) is False

    run(go())


def test_budget_keys_and_prefixes_are_independent() -> None:
    state = MemoryState(clock=FakeClock())
    retry, hedge = Budget(state, "retry"), Budget(state, "hedge")
    kw = dict(ratio=0.0, floor_per_s=0.1, window_s=10)  # 1 per window

    async def go() -> None:
        assert await retry.spend("a", **kw) is True
        assert await retry.spend("a", **kw) is False
        assert await retry.spend("b", **kw) is True
        assert await hedge.spend("a", **kw) is True
        await retry.note_request("a", 10)
        assert await hedge.usage("a", 10) == (0, 1)

    run(go())


# =================================================================================================
# limits.py
# =================================================================================================


def test_limits_none_always_admit() -> None:
    lim = DeploymentLimits(MemoryState(clock=FakeClock()))

    async def go() -> None:
        for _ in range(1000):
            assert await lim.admit("d", None, None, 10**9) is True

    run(go())


def test_limits_rpm() -> None:
    clock = FakeClock()
    lim = DeploymentLimits(MemoryState(clock=clock))

    async def go() -> None:
        assert [await lim.admit("d", 3, None, 10**6) for _ in range(4)] == [True, True, True, False]
        clock.advance(59.9)
        assert await lim.admit("d", 3, None, 1) is False
        clock.advance(0.1)  # a minute later
        assert await lim.admit("d", 3, None, 1) is True

    run(go())


def test_limits_rpm_sliding() -> None:
    clock = FakeClock()
    lim = DeploymentLimits(MemoryState(clock=clock))

    async def go() -> None:
        assert await lim.admit("d", 2, None, 0) is True
        clock.advance(30)
        assert await lim.admit("d", 2, None, 0) is True
        assert await lim.admit("d", 2, None, 0) is False
        clock.advance(30)  # the first request has left the minute, the second has not
        assert await lim.admit("d", 2, None, 0) is True
        assert await lim.admit("d", 2, None, 0) is False

    run(go())


def test_limits_tpm() -> None:
    clock = FakeClock()
    lim = DeploymentLimits(MemoryState(clock=clock))

    async def go() -> None:
        assert await lim.admit("d", None, 100, 60) is True
        assert await lim.admit("d", None, 100, 50) is False  # 110 > 100
        assert await lim.admit("d", None, 100, 40) is True  # exactly 100
        assert await lim.admit("d", None, 100, 1) is False
        assert await lim.admit("d", None, 100, 0) is True
        clock.advance(60)
        assert await lim.admit("d", None, 100, 100) is True

    run(go())


def test_limits_request_larger_than_tpm_is_refused() -> None:
    lim = DeploymentLimits(MemoryState(clock=FakeClock()))
    assert run(lim.admit("d", None, 100, 101)) is False


def test_limits_refusal_counts_nothing() -> None:
    lim = DeploymentLimits(MemoryState(clock=FakeClock()))

    async def go() -> None:
        for _ in range(5):  # refused on tokens: must not use up the request limit
            assert await lim.admit("d", 2, 100, 500) is False
        assert await lim.admit("d", 2, 100, 10) is True
        assert await lim.admit("d", 2, 100, 10) is True
        assert await lim.admit("d", 2, 100, 10) is False  # refused on requests: no tokens counted
        assert await lim.admit("d", None, 100, 80) is True  # 20 + 80

    run(go())


def test_limits_settle_corrects_the_estimate() -> None:
    lim = DeploymentLimits(MemoryState(clock=FakeClock()))

    async def go() -> None:
        assert await lim.admit("d", None, 100, 80) is True
        assert await lim.admit("d", None, 100, 30) is False
        await lim.settle("d", 100, estimated=80, actual=50)  # 30 freed
        assert await lim.admit("d", None, 100, 50) is True  # 50 + 50
        assert await lim.admit("d", None, 100, 1) is False
        await lim.settle("d", 100, estimated=50, actual=60)  # 10 more used than thought
        await lim.settle("d", 100, estimated=50, actual=20)  # 30 freed
        assert await lim.admit("d", None, 100, 20) is True  # 100 + 10 - 30 = 80, + 20 = 100
        assert await lim.admit("d", None, 100, 1) is False

    run(go())


def test_limits_settle_without_tpm_is_a_no_op() -> None:
    lim = DeploymentLimits(MemoryState(clock=FakeClock()))

    async def go() -> None:
        await lim.settle("d", None, estimated=0, actual=10**6)
        assert await lim.admit("d", None, 100, 100) is True

    run(go())


def test_limits_are_per_deployment() -> None:
    lim = DeploymentLimits(MemoryState(clock=FakeClock()))

    async def go() -> None:
        assert await lim.admit("a", 1, 10, 10) is True
        assert await lim.admit("a", 1, 10, 1) is False
        assert await lim.admit("b", 1, 10, 10) is True

    run(go())


# =================================================================================================
# classify.py
# =================================================================================================


def upstream(status: int | None, message: str = "upstream said no", cls: type = UpstreamError, **kw: Any) -> BastionError:
    if cls is UpstreamError:
        return UpstreamError(message, upstream_status=status, **kw)
    err = cls(message, **kw)
    err.upstream_status = status
    return err


UPSTREAM_CLASSES = [UpstreamError, UpstreamTimeout, UpstreamUnavailable]


@pytest.mark.parametrize("cls", UPSTREAM_CLASSES)
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Invalid value for 'temperature'", Failure.FATAL),
        ("This model's maximum context length is 8192 tokens (context_length_exceeded)", Failure.CONTEXT_OVERFLOW),
        ("prompt is too long: 210000 tokens > 200000 maximum", Failure.CONTEXT_OVERFLOW),
        ("Prompt Is Too Long", Failure.CONTEXT_OVERFLOW),
        ("The response was filtered (content_filter)", Failure.CONTENT_FILTER),
        ("The prompt triggered Azure OpenAI's content filtering policy", Failure.CONTENT_FILTER),
    ],
)
def test_classify_400(cls: type, message: str, expected: Failure) -> None:
    assert classify(upstream(400, message, cls)) is expected


@pytest.mark.parametrize("cls", UPSTREAM_CLASSES)
@pytest.mark.parametrize("status", [401, 403, 404])
def test_classify_deployment_statuses(cls: type, status: int) -> None:
    assert classify(upstream(status, "no such model", cls)) is Failure.DEPLOYMENT


@pytest.mark.parametrize("cls", UPSTREAM_CLASSES)
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 529])
def test_classify_retryable_statuses(cls: type, status: int) -> None:
    assert classify(upstream(status, "overloaded", cls)) is Failure.RETRYABLE


@pytest.mark.parametrize("cls", UPSTREAM_CLASSES)
def test_classify_no_http_answer_is_retryable(cls: type) -> None:
    assert classify(upstream(None, "connection refused", cls)) is Failure.RETRYABLE


def test_classify_plain_timeout_and_unavailable() -> None:
    assert classify(UpstreamTimeout("first token took too long")) is Failure.RETRYABLE
    assert classify(UpstreamUnavailable("connection reset")) is Failure.RETRYABLE


def test_classify_missing_provider_key_is_deployment() -> None:
    err = UpstreamError("set OPENAI_API_KEY", status=503, code="provider_key_missing")
    assert classify(err) is Failure.DEPLOYMENT


def test_classify_non_upstream_errors() -> None:
    assert classify(InvalidRequest("messages is required")) is Failure.FATAL
    assert classify(ModelNotFound("no such alias")) is Failure.FATAL
    assert classify(BastionError("gateway overloaded", status=503)) is Failure.RETRYABLE


def test_classify_context_overflow_beats_generic_413() -> None:
    assert classify(upstream(413, "prompt is too long")) is Failure.CONTEXT_OVERFLOW
    assert classify(upstream(413, "request entity too large")) is Failure.FATAL


def test_counts_against_breaker() -> None:
    err = UpstreamError("boom", status=502, upstream_status=500)
    assert counts_against_breaker(err, Failure.RETRYABLE)
    assert counts_against_breaker(UpstreamTimeout("no first token within 5s"), Failure.RETRYABLE)
    assert counts_against_breaker(UpstreamUnavailable("connection refused"), Failure.RETRYABLE)
    assert counts_against_breaker(upstream(404, "no such model"), Failure.DEPLOYMENT)
    assert not counts_against_breaker(err, Failure.FATAL)
    assert not counts_against_breaker(err, Failure.CONTEXT_OVERFLOW)
    assert not counts_against_breaker(err, Failure.CONTENT_FILTER)


def test_the_callers_own_timeout_never_counts_against_the_breaker() -> None:
    timeout = UpstreamTimeout("no first token within 1s (the request's x-bastion-timeout-first-token)")
    assert classify(timeout) is Failure.RETRYABLE  # another deployment may still make it in time
    assert not counts_against_breaker(timeout, Failure.RETRYABLE, caller_limited=True)


@pytest.mark.parametrize("cls", UPSTREAM_CLASSES)
def test_an_upstream_429_is_retried_but_never_opens_a_breaker(cls: type) -> None:
    err = upstream(429, "rate limit exceeded", cls)
    assert classify(err) is Failure.RETRYABLE
    assert not counts_against_breaker(err, Failure.RETRYABLE)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # ms preferred
        ({"retry-after-ms": "-20"}, 0.0),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),  # bad ms: fall back to seconds
        ({"retry-after-ms": "", "retry-after": "4"}, 4.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "soon"}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers) == expected


def test_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)  # "Wed, 21 Oct 2015 07:28:00 GMT"
    got = retry_after_s({"retry-after": future})
    assert got is not None
    assert 27 <= got <= 31
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_s({"retry-after": past}) == 0.0


@pytest.mark.parametrize("value", ["soon, maybe", "Mon, 99 Foo 2020 25:61:00 GMT"])
def test_retry_after_garbage_with_comma_is_none(value: str) -> None:
    assert retry_after_s({"retry-after": value}) is None


@pytest.mark.parametrize("n", range(0, 12))
def test_backoff_bounds(n: int) -> None:
    rng = random.Random(1234 + n)
    base, cap = 100.0, 2000.0
    ceiling = min(cap, base * 2 ** max(0, n - 1)) / 1000
    draws = [backoff_s(n, base, cap, rng) for _ in range(300)]
    assert all(0 <= x <= ceiling for x in draws)
    assert max(draws) > 0.8 * ceiling  # reaches up to the ceiling (full jitter)
    assert min(draws) < 0.2 * ceiling  # ... and down towards 0


def test_backoff_is_spread_not_constant() -> None:
    rng = random.Random(7)
    draws = [backoff_s(3, 100, 2000, rng) for _ in range(2000)]  # uniform(0, 0.4)
    assert len(set(draws)) > 1900
    assert statistics.mean(draws) == pytest.approx(0.2, abs=0.02)
    assert statistics.pstdev(draws) == pytest.approx(0.4 / math.sqrt(12), rel=0.1)


def test_backoff_is_reproducible_with_a_seed() -> None:
    a = [backoff_s(2, 50, 1000, random.Random(99)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_backoff_zero_base_or_cap() -> None:
    rng = random.Random(1)
    assert backoff_s(5, 0, 2000, rng) == 0
    assert backoff_s(5, 100, 0, rng) == 0


# =================================================================================================
# stats.py
# =================================================================================================


def nearest_rank(values: list[float], p: float) -> float:
    """The smallest observation x such that at least p % of the observations are <= x (exact arithmetic)."""
    n = len(values)
    need = Fraction(p) * n / 100
    for x in sorted(values):
        if sum(1 for v in values if v <= x) >= need:
            return x
    raise AssertionError("unreachable")


def test_latency_window_empty_and_single() -> None:
    w = LatencyWindow()
    assert len(w) == 0
    assert w.percentile(50) is None
    w.add(0.25)
    assert len(w) == 1
    assert w.percentile(0) == 0.25
    assert w.percentile(50) == 0.25
    assert w.percentile(100) == 0.25


def test_latency_window_known_percentiles() -> None:
    w = LatencyWindow()
    for v in [5, 1, 4, 2, 3, 10, 9, 8, 7, 6]:
        w.add(float(v))
    assert w.percentile(0) == 1
    assert w.percentile(10) == 1
    assert w.percentile(11) == 2
    assert w.percentile(50) == 5
    assert w.percentile(90) == 9
    assert w.percentile(95) == 10
    assert w.percentile(100) == 10


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=64),
    p=st.one_of(st.integers(min_value=0, max_value=100), st.floats(min_value=0, max_value=100)),
    queries=st.integers(min_value=1, max_value=3),
)
def test_latency_window_percentile_matches_nearest_rank(values: list[float], p: float, queries: int) -> None:
    w = LatencyWindow(size=64)  # never overflows here: every call sees every value
    checked = 0
    for i, v in enumerate(values):
        w.add(v)
        if i % 7 == 0 or i == len(values) - 1:  # interleave queries, so that the cache is exercised
            for _ in range(queries):
                got = w.percentile(p)
                n = i + 1
                # float p (not whole) can still round at an exact boundary; whole p is exact
                if math.ceil(p * n / 100) != math.ceil(Fraction(p) * n / 100):
                    continue
                assert got == nearest_rank(values[:n], p)
                checked += 1
    assume(checked > 0)


@pytest.mark.parametrize(("p", "n"), [(7, 100), (14, 50), (28, 25)])
def test_latency_window_percentile_exact_rank_boundary(p: int, n: int) -> None:
    w = LatencyWindow()
    for v in range(1, n + 1):
        w.add(float(v))
    assert w.percentile(p) == nearest_rank([float(v) for v in range(1, n + 1)], p) == p * n // 100


def test_latency_window_size_cap() -> None:
    w = LatencyWindow(size=8)
    for v in range(1, 21):
        w.add(float(v))
    assert len(w) == 8
    assert list(w.values) == [float(v) for v in range(13, 21)]
    assert w.percentile(0) == 13
    assert w.percentile(100) == 20


def test_latency_window_full_window_catches_up_within_size_over_16() -> None:
    """Once full, the cached order may lag, but never by more than size // 16 observations."""
    w = LatencyWindow(size=512)
    for _ in range(512):
        w.add(0.0)
    assert w.percentile(100) == 0.0
    for _ in range(512 // 16 + 1):
        w.add(10.0)
    assert w.percentile(100) == 10.0
    for _ in range(512):
        w.add(1.0)
    assert w.percentile(0) == 1.0
    assert w.percentile(100) == 1.0


def test_stats_inflight_never_negative() -> None:
    s = DeploymentStats()
    s.end("d")
    assert s.inflight.get("d", 0) == 0
    s.begin("d")
    s.begin("d")
    assert s.inflight["d"] == 2
    s.end("d")
    s.end("d")
    s.end("d")
    assert s.inflight["d"] == 0
    s.begin("d")
    assert s.inflight["d"] == 1
    assert s.inflight.get("other", 0) == 0


def test_stats_ttft_ewma() -> None:
    s = DeploymentStats()
    s.observe_ttft("alias", "d", 1.0)
    assert s.ttft_ewma["d"] == 1.0  # the first observation is taken as is
    s.observe_ttft("alias", "d", 2.0)
    assert s.ttft_ewma["d"] == pytest.approx(1.0 + DeploymentStats.ALPHA * 1.0)
    for _ in range(100):
        s.observe_ttft("alias", "d", 3.0)
    assert s.ttft_ewma["d"] == pytest.approx(3.0, abs=1e-6)  # converges to a steady value
    assert "other" not in s.ttft_ewma


def test_stats_failure_counts_as_slow() -> None:
    s = DeploymentStats()
    s.observe_failure("d", 0.5)
    assert s.ttft_ewma["d"] == 1.0  # never measured: twice what it cost
    s.observe_ttft("a", "e", 1.0)
    s.observe_failure("e", 0.1)  # quick failure still counts as at least twice the average
    assert s.ttft_ewma["e"] > 1.0


def test_stats_ttft_percentile_needs_min_samples() -> None:
    s = DeploymentStats()
    assert s.ttft_percentile("alias", 95, 1) is None
    for i in range(19):
        s.observe_ttft("alias", "d1" if i % 2 else "d2", float(i + 1))
    assert s.ttft_percentile("alias", 95, 20) is None
    s.observe_ttft("alias", "d1", 20.0)
    assert s.ttft_percentile("alias", 95, 20) == 19.0
    assert s.ttft_percentile("alias", 100, 20) == 20.0
    assert s.ttft_percentile("other", 50, 1) is None  # per alias


# =================================================================================================
# router.py
# =================================================================================================

SIM = {"type": "sim", "base_url": "http://127.0.0.1:9/v1"}


def dep(model: str, **kw: Any) -> dict[str, Any]:
    return {"provider": "sim", "model": model, **kw}


def config(models: dict[str, Any], **top: Any) -> BastionConfig:
    return BastionConfig.model_validate({"providers": {"sim": SIM}, "models": models, **top})


def make_router(cfg: BastionConfig, seed: int = 0) -> Router:
    return Router(cfg, rng=random.Random(seed))


def ids(deps: list[Any]) -> list[str]:
    return [d.id for d in deps]


def test_policy_fields_lay_over_routing_defaults() -> None:
    cfg = config(
        {
            "a": {
                "deployments": [dep("m")],
                "retry": {"backoff_base_ms": 1},
                "breaker": {"consecutive_failures": 2},
                "timeouts": {"first_token_s": 5},
                "hedge": {"percentile": 90},
            },
            "b": {"deployments": [dep("m")], "strategy": "lowest_latency", "retry": {"max_attempts": 3}},
            "c": {"deployments": [dep("m")]},
        },
        routing={
            "strategy": "least_outstanding",
            "retry": {"max_attempts": 5, "backoff_max_ms": 50},
            "breaker": {"open_s": 3},
            "timeouts": {"total_s": 100},
            "hedge": {"enabled": True},
        },
    )
    a = Policy.resolve(cfg.models["a"], cfg.routing)
    assert a.strategy == "least_outstanding"
    assert (a.retry.max_attempts, a.retry.backoff_base_ms, a.retry.backoff_max_ms) == (5, 1, 50)
    assert a.retry.budget_ratio == 0.2  # untouched anywhere: the built-in default
    assert (a.breaker.consecutive_failures, a.breaker.open_s) == (2, 3)
    assert (a.timeouts.first_token_s, a.timeouts.total_s) == (5, 100)
    assert (a.hedge.enabled, a.hedge.percentile) == (True, 90)

    b = Policy.resolve(cfg.models["b"], cfg.routing)
    assert b.strategy == "lowest_latency"
    # set explicitly on the model, even to the built-in default value: the model wins
    assert (b.retry.max_attempts, b.retry.backoff_max_ms) == (3, 50)

    c = Policy.resolve(cfg.models["c"], cfg.routing)
    assert c.retry == cfg.routing.retry
    assert c.breaker == cfg.routing.breaker
    assert c.hedge == cfg.routing.hedge
    assert c.timeouts == cfg.routing.timeouts

    router = make_router(cfg)
    assert router.routes["a"].policy == a
    assert router.routes["b"].policy == b


def test_router_builds_routes_and_deployments() -> None:
    cfg = config(
        {
            "a": {"deployments": [dep("m1", weight=2, rpm=10, tpm=1000), dep("m2", name="second")],
                  "description": "alias a"},
            "e": {"kind": "embedding", "deployments": [dep("emb")]},
        }
    )
    r = make_router(cfg)
    a = r.route("a", "chat")
    assert a.kind == "chat" and a.description == "alias a"
    assert ids(list(a.deployments)) == ["sim/m1", "second"]
    d1 = a.deployments[0]
    assert (d1.alias, d1.model, d1.weight, d1.rpm, d1.tpm) == ("a", "m1", 2, 10, 1000)
    assert d1.provider is r.providers["sim"]
    assert r.route("e", "embedding").deployments[0].model == "emb"
    assert r.deployment("second") is a.deployments[1]
    assert r.deployment("nope") is None
    run(r.close())


@pytest.mark.parametrize(
    ("alias", "kind"), [("nope", "chat"), ("embeddy", "chat"), ("chatty", "embedding"), (None, "chat"), (3, "chat")]
)
def test_router_route_unknown_or_wrong_kind(alias: object, kind: str) -> None:
    cfg = config({"chatty": {"deployments": [dep("m")]},
                  "embeddy": {"kind": "embedding", "deployments": [dep("x")]}})
    r = make_router(cfg)
    with pytest.raises(ModelNotFound) as e:
        r.route(alias, kind)
    available = e.value.message.split("Available:")[1]
    right, wrong = ("chatty", "embeddy") if kind == "chat" else ("embeddy", "chatty")
    assert right in available  # lists the aliases of the asked-for kind only
    assert wrong not in available


def test_router_single_deployment_plan() -> None:
    r = make_router(config({"a": {"deployments": [dep("m")]}}))
    route = r.route("a", "chat")
    assert ids(r.plan(route)) == ["sim/m"]


def test_weighted_plan_frequencies_follow_weights() -> None:
    cfg = config({"a": {"deployments": [dep("x", weight=1), dep("y", weight=2), dep("z", weight=7)]}})
    r = make_router(cfg, seed=42)
    route = r.route("a", "chat")
    firsts: Counter[str] = Counter()
    n = 10_000
    for _ in range(n):
        plan = ids(r.plan(route))
        assert sorted(plan) == ["sim/x", "sim/y", "sim/z"]  # every deployment, once
        firsts[plan[0]] += 1
    assert firsts["sim/x"] / n == pytest.approx(0.1, abs=0.02)
    assert firsts["sim/y"] / n == pytest.approx(0.2, abs=0.02)
    assert firsts["sim/z"] / n == pytest.approx(0.7, abs=0.02)


def test_weighted_plan_second_place_without_replacement() -> None:
    """Given z first, the rest are drawn by their remaining weights (y twice as often as x)."""
    cfg = config({"a": {"deployments": [dep("x", weight=1), dep("y", weight=2), dep("z", weight=7)]}})
    r = make_router(cfg, seed=3)
    route = r.route("a", "chat")
    seconds: Counter[str] = Counter()
    for _ in range(10_000):
        plan = ids(r.plan(route))
        if plan[0] == "sim/z":
            seconds[plan[1]] += 1
    total = seconds["sim/x"] + seconds["sim/y"]
    assert seconds["sim/y"] / total == pytest.approx(2 / 3, abs=0.03)


def test_least_outstanding_prefers_fewer_inflight() -> None:
    cfg = config({"a": {"strategy": "least_outstanding", "deployments": [dep("x"), dep("y"), dep("z")]}})
    r = make_router(cfg, seed=1)
    route = r.route("a", "chat")
    r.stats.begin("sim/x")
    r.stats.begin("sim/x")
    r.stats.begin("sim/y")
    for _ in range(50):
        assert ids(r.plan(route)) == ["sim/z", "sim/y", "sim/x"]
    r.stats.end("sim/x")
    r.stats.end("sim/x")
    r.stats.end("sim/y")
    firsts = Counter(ids(r.plan(route))[0] for _ in range(3000))  # all idle: ties broken at random
    assert set(firsts) == {"sim/x", "sim/y", "sim/z"}
    assert min(firsts.values()) > 800


def test_least_outstanding_scales_by_weight() -> None:
    cfg = config({"a": {"strategy": "least_outstanding", "deployments": [dep("big", weight=4), dep("small")]}})
    r = make_router(cfg)
    route = r.route("a", "chat")
    for _ in range(2):
        r.stats.begin("sim/big")  # 2 / 4 = 0.5
    r.stats.begin("sim/small")  # 1 / 1 = 1
    for _ in range(20):
        assert ids(r.plan(route))[0] == "sim/big"


def test_lowest_latency_never_measured_first_then_fastest() -> None:
    cfg = config({"a": {"strategy": "lowest_latency", "deployments": [dep("slow"), dep("fast"), dep("new")]}})
    r = make_router(cfg, seed=5)
    route = r.route("a", "chat")
    r.stats.observe_ttft("a", "sim/slow", 0.9)
    r.stats.observe_ttft("a", "sim/fast", 0.1)
    plans = Counter(tuple(ids(r.plan(route))) for _ in range(2000))
    ordered = plans[("sim/new", "sim/fast", "sim/slow")]
    assert ordered / 2000 > 0.9  # 5 % exploration takes a random order
    assert ordered / 2000 < 1.0  # ... but exploration does happen
    r.stats.observe_ttft("a", "sim/new", 0.5)
    firsts = Counter(ids(r.plan(route))[0] for _ in range(2000))
    assert firsts["sim/fast"] / 2000 > 0.9


def test_chain_own_deployments_then_fallbacks() -> None:
    cfg = config(
        {
            "main": {"deployments": [dep("m1"), dep("m2")], "fallback": {"models": ["backup", "other"]}},
            "backup": {"deployments": [dep("b1")], "fallback": {"models": ["third"]}},
            "other": {"deployments": [dep("o1"), dep("o2")]},
            "third": {"deployments": [dep("t1")]},
        }
    )
    r = make_router(cfg)
    main = r.route("main", "chat")
    chain = r.chain(main)
    assert [c.route.alias for c in chain] == ["main", "main", "backup", "other", "other"]
    assert sorted(ids([c.deployment for c in chain[:2]])) == ["sim/m1", "sim/m2"]
    assert chain[2].deployment.id == "sim/b1"
    assert sorted(ids([c.deployment for c in chain[3:]])) == ["sim/o1", "sim/o2"]
    assert "sim/t1" not in ids([c.deployment for c in chain])  # one level of fallbacks only
    assert chain[2].route is r.routes["backup"]  # the fallback's own route (and its policy)

    no_fb = r.chain(r.route("other", "chat"))
    assert [c.route.alias for c in no_fb] == ["other", "other"]


def test_chain_of() -> None:
    cfg = config(
        {
            "main": {"deployments": [dep("m1")],
                     "fallback": {"models": ["backup"], "on_context_overflow": ["long"]}},
            "backup": {"deployments": [dep("b1")]},
            "long": {"deployments": [dep("l1"), dep("l2")], "fallback": {"models": ["backup"]}},
        }
    )
    r = make_router(cfg)
    assert r.chain_of([]) == []
    got = r.chain_of(r.route("main", "chat").policy.fallback.on_context_overflow)
    assert [c.route.alias for c in got] == ["long", "long"]
    assert sorted(ids([c.deployment for c in got])) == ["sim/l1", "sim/l2"]
    both = r.chain_of(["backup", "long"])
    assert [c.route.alias for c in both] == ["backup", "long", "long"]


def test_pinned_route() -> None:
    cfg = config(
        {
            "main": {
                "deployments": [dep("m1"), dep("m2")],
                "hedge": {"enabled": True, "percentile": 80},
                "retry": {"max_attempts": 7},
                "fallback": {"models": ["backup"]},
                "description": "d",
            },
            "backup": {"deployments": [dep("b1")]},
        }
    )
    r = make_router(cfg)
    d = r.deployment("sim/m2")
    assert d is not None
    pinned = r.pinned_route(d)
    assert pinned.alias == "main" and pinned.kind == "chat" and pinned.description == "d"
    assert pinned.deployments == (d,)
    assert pinned.policy.hedge.enabled is False
    assert pinned.policy.hedge.percentile == 80
    assert pinned.policy.retry.max_attempts == 7
    assert pinned.policy.fallback.models == ()
    assert [c.deployment.id for c in r.chain(pinned)] == ["sim/m2"]
    # the alias's own route is untouched
    assert r.routes["main"].policy.hedge.enabled is True
    assert r.routes["main"].policy.fallback.models == ("backup",)


@pytest.mark.parametrize(
    ("models", "needle"),
    [
        ({"a": {"deployments": [dep("m")], "fallback": {"models": ["nope"]}}},
         "models.a.fallback.models.0: unknown model alias 'nope'"),
        ({"a": {"deployments": [dep("m")], "fallback": {"models": ["a"]}}},
         "models.a.fallback.models.0: an alias cannot fall back to itself"),
        ({"a": {"deployments": [dep("m")], "fallback": {"models": ["b", "e"]}},
          "b": {"deployments": [dep("m")]},
          "e": {"kind": "embedding", "deployments": [dep("x")]}},
         "models.a.fallback.models.1: 'e' is a embedding model, 'a' is chat"),
        ({"e": {"kind": "embedding", "deployments": [dep("x")], "fallback": {"on_content_filter": ["a"]}},
          "a": {"deployments": [dep("m")]}},
         "models.e.fallback.on_content_filter.0: 'a' is a chat model, 'e' is embedding"),
        ({"a": {"deployments": [dep("m")], "fallback": {"on_context_overflow": ["zzz"]}}},
         "models.a.fallback.on_context_overflow.0: unknown model alias 'zzz'"),
        ({"a": {"deployments": [dep("m")], "fallback": {"models": ["b", "b"]}}, "b": {"deployments": [dep("m")]}},
         "models.a.fallback.models.1: models lists the alias 'b' twice"),
    ],
)
def test_config_fallback_validation(models: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        config(models)
    # each problem at its own key path (the config loader maps it to the line)
    assert needle in [f"{'.'.join(map(str, err['loc']))}: {err['msg']}".split(" (known")[0] for err in e.value.errors()]


def test_config_valid_fallbacks_accepted() -> None:
    cfg = config(
        {
            "a": {"deployments": [dep("m")], "fallback": {"models": ["b"], "on_context_overflow": ["b"]}},
            "b": {"deployments": [dep("n")], "fallback": {"models": ["a"]}},  # a cycle is fine: one level only
        }
    )
    r = make_router(cfg)
    assert [c.route.alias for c in r.chain(r.route("a", "chat"))] == ["a", "b"]
    assert [c.route.alias for c in r.chain(r.route("b", "chat"))] == ["b", "a"]
