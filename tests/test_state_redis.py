"""The Redis state backend (``bastion.state.redis.RedisState``) against a real ``redis-server``: the same
semantics as the in-process backend (tests/test_state_memory.py) on real time, atomicity under concurrent
clients in separate OS processes, and the rate-limit admission that relies on it.

Time-dependent checks wait for the server's next whole second (windows are per-second buckets of the server's
clock) or for a short TTL to pass; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from bastion.config.model import BreakerConfig, StateConfig
from bastion.routing.breaker import Breakers, Gate, Pool
from bastion.routing.limits import DeploymentLimits
from bastion.state import MemoryState, State, open_state
from bastion.state.redis import RedisState, split_url
from tests.redis_fixture import RedisServer

T = TypeVar("T")


def with_state(url: str, fn: Callable[[RedisState], Awaitable[T]]) -> T:
    async def go() -> T:
        st = RedisState(url)
        await st.start()
        try:
            return await fn(st)
        finally:
            await st.close()

    return asyncio.run(go())


async def next_second(st: RedisState, into: float = 0.05) -> float:
    """Sleep until ``into`` seconds past the server's next whole second; return that second."""
    now = st.clock()
    target = math.floor(now) + 1
    await asyncio.sleep(target + into - now)
    while st.clock() < target + into:  # the estimate is tight, but never trust a sleep's rounding
        await asyncio.sleep(0.01)
    return float(target)


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    return redis_server.fresh_url()


# ---- plain values -----------------------------------------------------------------------------


def test_get_set_delete_and_prefix(url: str, redis_server: RedisServer) -> None:
    async def go(s: RedisState) -> None:
        assert await s.get("k") is None
        await s.set("k", "v1")
        assert await s.get("k") == "v1"
        await s.set("k", "v2")
        assert await s.get("k") == "v2"
        await s.set("other", "x")
        await s.delete("k")
        assert await s.get("k") is None
        assert await s.get("other") == "x"
        await s.delete("never-set")
        # every key lives under the prefix, and another prefix sees none of them
        raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            assert await raw.get(s.prefix + "v:other") == "x"
        finally:
            await raw.aclose()
        other = RedisState(redis_server.fresh_url())
        try:
            assert await other.get("other") is None
        finally:
            await other.close()

    with_state(url, go)


def test_ttl_expiry_and_zero_ttl(url: str) -> None:
    async def go(s: RedisState) -> None:
        await s.set("k", "v", ttl_s=0.3)
        assert await s.get("k") == "v"
        await asyncio.sleep(0.5)
        assert await s.get("k") is None
        await s.set("z", "v", ttl_s=0)  # already expired
        assert await s.get("z") is None
        await s.set("forever", "v", ttl_s=0.3)
        await s.set("forever", "v2")  # set again without a ttl: no expiry
        await asyncio.sleep(0.5)
        assert await s.get("forever") == "v2"

    with_state(url, go)


# ---- compare_and_set --------------------------------------------------------------------------


def test_compare_and_set(url: str) -> None:
    async def go(s: RedisState) -> None:
        assert await s.compare_and_set("k", None, "a") is True
        assert await s.compare_and_set("k", None, "b") is False
        assert await s.get("k") == "a"
        assert await s.compare_and_set("k", "wrong", "b") is False
        assert await s.compare_and_set("k", "a", "b") is True
        assert await s.get("k") == "b"
        assert await s.compare_and_set("absent", "a", "b") is False
        assert await s.get("absent") is None
        # an expired value counts as absent, and the ttl applies to the new value
        assert await s.compare_and_set("slot", None, "1", ttl_s=0.3) is True
        assert await s.compare_and_set("slot", None, "1", ttl_s=0.3) is False
        await asyncio.sleep(0.5)
        assert await s.compare_and_set("slot", "1", "x") is False
        assert await s.compare_and_set("slot", None, "new") is True
        assert await s.get("slot") == "new"

    with_state(url, go)


def test_compare_and_set_is_exclusive_across_clients(url: str) -> None:
    async def go(_: RedisState) -> list[bool]:
        clients = [RedisState(url) for _ in range(4)]
        try:
            calls = [clients[i % 4].compare_and_set("slot", None, str(i)) for i in range(100)]
            return list(await asyncio.gather(*calls))
        finally:
            for c in clients:
                await c.close()

    assert with_state(url, go).count(True) == 1


# ---- incr / incr_if ---------------------------------------------------------------------------


def test_incr(url: str) -> None:
    async def go(s: RedisState) -> None:
        assert await s.incr("n") == 1
        assert await s.incr("n", 5) == 6
        assert await s.incr("n", -10) == -4
        assert await s.get("n") == "-4"
        await s.set("m", "41")
        assert await s.incr("m") == 42
        await s.set("bad", "abc")
        with pytest.raises(ValueError):
            await s.incr("bad")
        # a ttl on a new key expires it; an incr without a ttl keeps the expiry
        assert await s.incr("t", ttl_s=0.4) == 1
        assert await s.incr("t") == 2
        await asyncio.sleep(0.6)
        assert await s.get("t") is None
        assert await s.incr("t") == 1

    with_state(url, go)


def test_incr_if_limits_and_releases(url: str) -> None:
    async def go(s: RedisState) -> None:
        assert await s.incr_if("c", 3, 5) == 3
        assert await s.incr_if("c", 2, 5) == 5  # exactly at the limit
        assert await s.incr_if("c", 1, 5) is None  # over it: nothing changes
        assert await s.get("c") == "5"
        assert await s.incr_if("c", -2, 5) == 3  # a release always applies
        assert await s.incr_if("c", -10, 0) == 0  # and never goes below 0
        assert await s.incr_if("fresh", -1, 0) == 0
        assert await s.incr_if("big", 10, 5) is None
        assert await s.get("big") is None  # a refused add creates nothing
        # large values stay exact (nano-USD counters)
        assert await s.incr_if("nusd", 9_000_000_000_000, 1 << 62) == 9_000_000_000_000
        assert await s.incr_if("nusd", 1, 1 << 62) == 9_000_000_000_001
        # a new key gets the ttl, an existing one keeps its own
        assert await s.incr_if("q", 1, 10, ttl_s=0.4) == 1
        assert await s.incr_if("q", 1, 10, ttl_s=100) == 2
        await asyncio.sleep(0.6)
        assert await s.get("q") is None
        await s.set("bad", "x")
        with pytest.raises(ValueError):
            await s.incr_if("bad", 1, 10)

    with_state(url, go)


# ---- sliding windows --------------------------------------------------------------------------


def test_window_running_total_and_sum(url: str) -> None:
    async def go(s: RedisState) -> None:
        assert await s.window_sum("nothing", 60) == 0.0
        assert await s.window_add("w", 1, 60) == 1
        assert await s.window_add("w", 2.5, 60) == 3.5
        assert await s.window_sum("w", 60) == 3.5
        assert await s.window_add("w", -4, 60) == -0.5
        await s.set("w", "v")  # values and windows do not collide
        assert await s.window_sum("w", 60) == -0.5
        assert await s.get("w") == "v"

    with_state(url, go)


def test_window_amounts_slide_out(url: str) -> None:
    async def go(s: RedisState) -> None:
        await next_second(s)
        await s.window_add("w", 1, 2)  # second S
        await next_second(s)
        assert await s.window_add("w", 2, 2) == 3  # second S+1: both in the 2-second window
        await next_second(s)
        assert await s.window_sum("w", 2) == 2  # S+2: S has left
        await next_second(s)
        assert await s.window_sum("w", 2) == 0  # S+3: all gone
        assert await s.window_add("w", 7, 2) == 7

    with_state(url, go)


def test_window_add_at_an_earlier_bucket(url: str) -> None:
    async def go(s: RedisState) -> None:
        await next_second(s)
        t0 = s.clock()  # in second S
        await s.window_add("w", 10, 2, at=t0)
        await s.window_add("short", 10, 1)
        await next_second(s)  # S+1
        # S is still in the 2-second window: the settlement lands in S's bucket
        assert await s.window_add("w", -4, 2, at=t0) == 6
        # S has left the 1-second window: a settlement into it is dropped
        assert await s.window_add("short", -4, 1, at=t0) == 0
        assert await s.window_add("w", 1, 2) == 7  # now, in S+1
        await next_second(s)  # S+2: S's bucket (10 - 4) leaves, S+1's stays
        assert await s.window_sum("w", 2) == 1
        # an ``at`` in the future counts now
        assert await s.window_add("w", 1, 2, at=s.clock() + 3600) == 2

    with_state(url, go)


def test_window_add_if_at_the_limit(url: str) -> None:
    async def go(s: RedisState) -> None:
        assert [await s.window_add_if("w", 1, 60, 3) for _ in range(3)] == [1, 2, 3]
        assert await s.window_add_if("w", 1, 60, 3) is None
        assert await s.window_sum("w", 60) == 3
        assert await s.window_add_if("w", 0.5, 60, 3.5) == 3.5
        assert await s.window_add_if("fresh", 5, 60, 4) is None
        assert await s.window_sum("fresh", 60) == 0

    with_state(url, go)


def test_every_window_key_expires(url: str, redis_server: RedisServer) -> None:
    async def go(s: RedisState) -> None:
        await s.window_add("w", 1, 60)
        await s.set("v", "x", ttl_s=30)
        raw = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            keys = sorted([k async for k in raw.scan_iter(match=s.prefix + "*")])
            assert len(keys) == 3  # the value, the window's hash and its index
            for k in keys:
                ttl = await raw.pttl(k)
                assert 0 < ttl <= (60 + 5) * 1000, (k, ttl)
        finally:
            await raw.aclose()

    with_state(url, go)


def test_clock_follows_the_server(url: str) -> None:
    async def go(s: RedisState) -> tuple[float, float]:
        secs, micros = await s._r.time()
        return s.clock(), secs + micros / 1e6

    mine, server = with_state(url, go)
    assert abs(mine - server) < 1.0


# ---- atomicity across processes ---------------------------------------------------------------


def _hammer(url: str, op: str, n: int) -> int:
    """One OS process: ``n`` concurrent calls on one client; how many were admitted."""

    async def go() -> int:
        st = RedisState(url)
        await st.start()
        try:
            if op == "incr_if":
                got = await asyncio.gather(*(st.incr_if("shared", 1, 150, ttl_s=60) for _ in range(n)))
            elif op == "window_add_if":
                got = await asyncio.gather(*(st.window_add_if("shared-w", 1, 60, 150) for _ in range(n)))
            else:
                lim = DeploymentLimits(st)
                got = list(await asyncio.gather(*(lim.admit("dep", 120, 1000, 5) for _ in range(n))))
                got = [True if g else None for g in got]
            return sum(1 for g in got if g is not None)
        finally:
            await st.close()

    return asyncio.run(go())


def _from_four_processes(url: str, op: str) -> int:
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_hammer, [url] * 4, [op] * 4, [100] * 4))


def test_incr_if_never_exceeds_the_limit_across_processes(url: str) -> None:
    admitted = _from_four_processes(url, "incr_if")  # 400 tries against a limit of 150
    assert admitted == 150
    assert with_state(url, lambda s: s.get("shared")) == "150"


def test_window_add_if_never_exceeds_the_limit_across_processes(url: str) -> None:
    admitted = _from_four_processes(url, "window_add_if")
    assert admitted == 150
    assert with_state(url, lambda s: s.window_sum("shared-w", 60)) == 150


def test_deployment_limits_admit_exactly_rpm_across_processes(url: str) -> None:
    admitted = _from_four_processes(url, "admit")  # 400 requests against rpm 120 (tpm 1000 / 5 = 200)
    assert admitted == 120
    assert with_state(url, lambda s: s.window_sum("rl:dep:req", 60)) == 120
    assert with_state(url, lambda s: s.window_sum("rl:dep:tok", 60)) == 600


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_deployment_limits_give_the_request_back_when_tokens_refuse(backend: str, url: str) -> None:
    async def go() -> tuple[list[bool], float, float]:
        st: State = MemoryState() if backend == "memory" else RedisState(url)
        await st.start()
        try:
            lim = DeploymentLimits(st)
            got = [await lim.admit("d", 100, 1000, 300) for _ in range(5)]
            return got, await st.window_sum("rl:d:req", 60), await st.window_sum("rl:d:tok", 60)
        finally:
            await st.close()

    got, reqs, toks = asyncio.run(go())
    assert got == [True, True, True, False, False]
    assert reqs == 3  # the two refused by tpm were not left counted against rpm
    assert toks == 900


def test_breakers_on_redis_agree_across_replicas(url: str) -> None:
    """Four replicas (a client each) record failures of both deployments of one alias at once: exactly one
    is ejected (the pool's cap), every replica sees the same one, and it is open for all of them."""
    cfg = BreakerConfig(consecutive_failures=1, min_requests=1000, open_s=60)
    pools = [Pool.of("m", ("a", "b"), cfg)]

    async def go(_: RedisState) -> tuple[list[list[str]], list[Gate]]:
        states = [RedisState(url) for _ in range(4)]
        try:
            for st in states:
                await st.start()
            replicas = [Breakers(st, pools=pools) for st in states]
            await asyncio.gather(*(b.record(d, cfg, ok=False, probe=False) for b in replicas for d in ("a", "b")
                                   for _ in range(5)))
            out = [await b.ejected("m") for b in replicas]
            gates = [await b.gate(out[0][0], cfg, "m") for b in replicas] if out[0] else []
            return out, gates
        finally:
            for st in states:
                await st.close()

    out, gates = with_state(url, go)
    assert len(out[0]) == 1 and all(o == out[0] for o in out)
    assert gates == [Gate.OPEN] * 4


# ---- opening ----------------------------------------------------------------------------------


def test_open_state_redis_urls(redis_server: RedisServer) -> None:
    assert isinstance(open_state(redis_server.url), RedisState)
    assert isinstance(open_state("rediss://example.invalid:6380/0"), RedisState)
    assert split_url("redis://h:1/2?prefix=app:&ssl_cert_reqs=none") == ("redis://h:1/2?ssl_cert_reqs=none", "app:")
    assert split_url("redis://h:1/2")[1] == "bastion:"


@pytest.mark.parametrize("good", ["memory://", "redis://localhost:6379/0", "rediss://:pw@cache.internal:6380/2",
                                  "redis://h/0?prefix=app1:"])
def test_state_config_accepts_memory_and_redis_urls(good: str) -> None:
    assert StateConfig(url=good).url == good


@pytest.mark.parametrize("bad", ["postgres://x/y", "redis:/x", "REDIS://h", "memory"])
def test_state_config_names_both_forms_for_other_urls(bad: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        StateConfig(url=bad)
    msg = str(e.value)
    assert "memory://" in msg and "redis://" in msg and "rediss://" in msg


def test_unreachable_redis_is_a_clear_error() -> None:
    from bastion.state.redis import StateUnavailable

    async def go() -> None:
        st = RedisState("redis://:secret@127.0.0.1:9/0")
        try:
            await st.start()
        finally:
            await st.close()

    with pytest.raises(StateUnavailable) as e:
        asyncio.run(go())
    msg = str(e.value)
    assert "cannot reach Redis" in msg and "127.0.0.1:9" in msg
    assert "secret" not in msg
