"""Unit tests of the metering modules, in process and against a fake clock: who a rule applies to,
quotas at their limits and window boundaries, budgets by reservation, spend alerts and their webhooks,
and the validation of the cost-control config."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import math
import types
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

from bastion.config.metering import (
    AlertsConfig,
    BudgetConfig,
    LimitConfig,
    OutlierConfig,
    PriceOverride,
    SpendRateConfig,
    WebhookConfig,
)
from bastion.config.model import BastionConfig
from bastion.errors import RateLimited
from bastion.metering import alerts as alerts_mod
from bastion.metering.alerts import Alerts
from bastion.metering.budgets import BudgetExceeded, Budgets, from_nano, to_nano
from bastion.metering.quotas import Quotas
from bastion.metering.subjects import Subject, applies
from bastion.state import MemoryState
from bastion.store.sqlite import SQLiteStore

T0 = 1_700_000_040.0  # a multiple of 60 and of 120: a fixed-window boundary
HOUR0 = 1_699_999_200.0  # a multiple of 3600
NANO = 1_000_000_000


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        self.t = t

    def advance(self, s: float) -> None:
        self.t += s


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


ALICE = Subject("acme", "alice", "k1", "ci")
BOB = Subject("acme", "bob", "k2", "laptop")


# ---- applies ---------------------------------------------------------------------------------------


def test_applies_tenant_scope():
    assert applies(LimitConfig(scope="tenant", rpm=1), ALICE) == "tenant:acme"
    assert applies(LimitConfig(scope="tenant", match="acme", rpm=1), ALICE) == "tenant:acme"
    assert applies(LimitConfig(scope="tenant", match="globex", rpm=1), ALICE) is None
    assert applies(LimitConfig(scope="tenant", rpm=1), Subject("acme", None, None)) == "tenant:acme"


def test_applies_user_scope():
    assert applies(LimitConfig(scope="user", rpm=1), ALICE) == "user:acme/alice"
    assert applies(LimitConfig(scope="user", match="alice", rpm=1), ALICE) == "user:acme/alice"
    assert applies(LimitConfig(scope="user", match="alice", rpm=1), BOB) is None
    # no user on the request: user rules count it as the tenant's anonymous user (it never escapes them)
    anon = Subject("acme", None, "k9", "svc")
    assert applies(LimitConfig(scope="user", rpm=1), anon) == "user:acme/-"
    assert applies(LimitConfig(scope="user", rpm=1), Subject("globex", None, None)) == "user:globex/-"
    assert applies(LimitConfig(scope="user", match="alice", rpm=1), anon) is None
    assert applies(LimitConfig(scope="tenant", rpm=1), anon) == "tenant:acme"


def test_applies_key_scope_matches_id_or_name():
    rule_any = LimitConfig(scope="key", rpm=1)
    assert applies(rule_any, ALICE) == "key:acme/k1"
    assert applies(LimitConfig(scope="key", match="k1", rpm=1), ALICE) == "key:acme/k1"
    assert applies(LimitConfig(scope="key", match="ci", rpm=1), ALICE) == "key:acme/k1"  # by name, counted by id
    assert applies(LimitConfig(scope="key", match="ci", rpm=1), BOB) is None
    assert applies(rule_any, Subject("acme", "alice", None)) is None


def test_applies_tenant_filter():
    rule = LimitConfig(scope="user", tenant="acme", rpm=1)
    assert applies(rule, ALICE) == "user:acme/alice"
    assert applies(rule, Subject("globex", "alice", "k7")) is None
    key_rule = LimitConfig(scope="key", tenant="globex", match="ci", rpm=1)
    assert applies(key_rule, ALICE) is None
    assert applies(key_rule, Subject("globex", "x", "k8", "ci")) == "key:globex/k8"
    assert applies(LimitConfig(scope="tenant", tenant="globex", rpm=1), ALICE) is None


def test_same_user_name_in_two_tenants_never_shares_an_identity():
    rule = LimitConfig(scope="user", rpm=1)
    a = applies(rule, Subject("acme", "alice", "k1"))
    g = applies(rule, Subject("globex", "alice", "k1"))
    assert a == "user:acme/alice" and g == "user:globex/alice" and a != g
    krule = LimitConfig(scope="key", rpm=1)
    assert applies(krule, Subject("acme", "u", "k1")) != applies(krule, Subject("globex", "u", "k1"))


def test_users_of_two_tenants_have_separate_quota_counters():
    clock = Clock(T0 + 1)
    q = Quotas((LimitConfig(scope="user", rpm=1),), MemoryState(clock=clock), clock=clock)

    async def go() -> None:
        await q.admit(Subject("acme", "alice", None), 1)
        await q.admit(Subject("globex", "alice", None), 1)  # its own counter
        with pytest.raises(RateLimited):
            await q.admit(Subject("acme", "alice", None), 1)

    asyncio.run(go())


# ---- quotas ----------------------------------------------------------------------------------------


def _quotas(*rules: LimitConfig, at: float = T0 + 15.25) -> tuple[Quotas, MemoryState, Clock]:
    clock = Clock(at)
    state = MemoryState(clock=clock)
    return Quotas(rules, state, clock=clock), state, clock


def _window(t: float, window_s: int = 60) -> int:
    return int(t // window_s)


def test_rpm_exactly_at_limit_then_429_with_retry_after_and_headers():
    q, state, clock = _quotas(LimitConfig(scope="tenant", rpm=3))

    async def go() -> None:
        holds = [await q.admit(ALICE, 10) for _ in range(3)]
        assert holds[0].headers["x-ratelimit-remaining-requests"] == "2"
        assert holds[-1].headers == {
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "45s",  # ceil(60 - 15.25)
        }
        with pytest.raises(RateLimited) as ei:
            await q.admit(BOB, 10)  # same tenant
        e = ei.value
        assert e.status == 429 and e.code == "rate_limited"
        assert e.headers == {
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "45s",
            "retry-after": "45",
        }
        assert "3 requests per minute" in e.message and "45s" in e.message
        assert await state.get(f"q:0:tenant:acme:r:{_window(clock())}") == "3"  # the refusal took nothing

    asyncio.run(go())


def test_reset_text_in_minutes_for_long_windows():
    q, _, _ = _quotas(LimitConfig(scope="tenant", rpm=1, window_s=120))

    async def go() -> None:
        hold = await q.admit(ALICE, 1)
        assert hold.headers["x-ratelimit-reset-requests"] == "1m45s"  # ceil(120 - 15.25) = 105
        with pytest.raises(RateLimited) as ei:
            await q.admit(ALICE, 1)
        assert ei.value.headers["retry-after"] == "105"
        assert "per 120 s" in ei.value.message

    asyncio.run(go())


def test_rpm_rolls_over_exactly_at_the_window_boundary():
    q, _, clock = _quotas(LimitConfig(scope="tenant", rpm=2), at=T0 + 30)

    async def go() -> None:
        await q.admit(ALICE, 1)
        await q.admit(ALICE, 1)
        clock.set(T0 + 60 - 0.001)  # boundary - epsilon: same window
        with pytest.raises(RateLimited) as ei:
            await q.admit(ALICE, 1)
        assert ei.value.headers["retry-after"] == "1"  # max(1, ceil(0.001))
        assert ei.value.headers["x-ratelimit-reset-requests"] == "1s"
        clock.set(T0 + 60)  # the boundary: a new window
        hold = await q.admit(ALICE, 1)
        assert hold.headers["x-ratelimit-remaining-requests"] == "1"
        assert hold.headers["x-ratelimit-reset-requests"] == "1m0s"
        await q.admit(ALICE, 1)
        with pytest.raises(RateLimited):
            await q.admit(ALICE, 1)

    asyncio.run(go())


def test_tpm_admission_refusal_and_oversized_request():
    q, state, clock = _quotas(LimitConfig(scope="user", tpm=1000))
    key = f"q:0:user:acme/alice:t:{_window(clock())}"

    async def go() -> None:
        h = await q.admit(ALICE, 600)
        assert h.headers == {
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "400",
            "x-ratelimit-reset-tokens": "45s",
        }
        assert h.tokens == [(key, 600, 120)]
        with pytest.raises(RateLimited) as ei:
            await q.admit(ALICE, 500)
        assert ei.value.headers["retry-after"] == "45"
        assert ei.value.headers["x-ratelimit-remaining-tokens"] == "0"
        assert "1000 tokens per minute" in ei.value.message
        assert await state.get(key) == "600"
        h2 = await q.admit(ALICE, 400)  # exactly to the limit
        assert h2.headers["x-ratelimit-remaining-tokens"] == "0"
        # a request larger than the whole limit: refused, and retrying will never help
        q2, state2, _ = _quotas(LimitConfig(scope="user", tpm=1000))
        with pytest.raises(RateLimited) as ei:
            await q2.admit(ALICE, 1001)
        assert "retry-after" not in ei.value.headers
        assert "1001" in ei.value.message and "lower max_tokens" in ei.value.message
        assert await state2.get(key) is None
        await q2.admit(ALICE, 1000)  # the whole limit is fine

    asyncio.run(go())


def test_tpm_settle_corrects_the_window_count():
    q, state, clock = _quotas(LimitConfig(scope="tenant", tpm=1000))
    key = f"q:0:tenant:acme:t:{_window(clock())}"

    async def go() -> None:
        hold = await q.admit(ALICE, 900)  # estimate: prompt + max_tokens
        with pytest.raises(RateLimited):
            await q.admit(BOB, 200)
        await q.release(hold, 150)  # the call used far less
        assert await state.get(key) == "150"
        await q.admit(BOB, 850)
        assert await state.get(key) == "1000"
        # a call that used more than estimated is counted at its real size (may go over)
        q2, state2, clock2 = _quotas(LimitConfig(scope="tenant", tpm=1000))
        h = await q2.admit(ALICE, 100)
        await q2.release(h, 1200)
        assert await state2.get(f"q:0:tenant:acme:t:{_window(clock2())}") == "1200"
        with pytest.raises(RateLimited):
            await q2.admit(ALICE, 1)
        # None: nothing to correct
        h3 = await q2.admit(BOB, 0)
        await q2.release(h3, None)
        assert await state2.get(f"q:0:tenant:acme:t:{_window(clock2())}") == "1200"

    asyncio.run(go())


def test_late_token_correction_does_not_leave_a_key_forever():
    q, state, clock = _quotas(LimitConfig(scope="tenant", tpm=1000), at=T0 + 1)
    key = f"q:0:tenant:acme:t:{_window(T0 + 1)}"

    async def go() -> None:
        hold = await q.admit(ALICE, 900)
        clock.set(T0 + 300)  # the request ran for 5 minutes
        await q.release(hold, 150)
        clock.set(T0 + 10**6)
        assert await state.get(key) is None

    asyncio.run(go())


def test_concurrency_slots_taken_and_released():
    q, state, _ = _quotas(LimitConfig(scope="key", concurrent=2))
    key = "q:0:key:acme/k1:c"

    async def go() -> None:
        a = await q.admit(ALICE, 1)
        b = await q.admit(ALICE, 1)
        assert a.concurrent == [key] and await state.get(key) == "2"
        with pytest.raises(RateLimited) as ei:
            await q.admit(ALICE, 1)
        assert ei.value.headers == {"retry-after": "1"}
        assert "2 requests in flight" in ei.value.message
        await q.admit(BOB, 1)  # another key: its own slots
        await q.release(a, None)
        assert await state.get(key) == "1"
        c = await q.admit(ALICE, 1)
        await q.release(b, 10)
        await q.release(c, 10)
        assert await state.get(key) == "0"

    asyncio.run(go())


def test_concurrency_slots_survive_the_counter_ttl():
    q, state, clock = _quotas(LimitConfig(scope="tenant", concurrent=2), at=T0)

    async def go() -> None:
        first = await q.admit(ALICE, 1)  # creates the counter at T0
        await q.release(first, None)
        clock.set(T0 + 3000)
        await q.admit(ALICE, 1)
        await q.admit(BOB, 1)  # 2 in flight, at the limit
        clock.set(T0 + 3601)  # both still in flight
        with pytest.raises(RateLimited):
            await q.admit(ALICE, 1)

    asyncio.run(go())


def test_refusal_by_a_later_rule_gives_back_what_earlier_rules_took():
    q, state, clock = _quotas(
        LimitConfig(scope="tenant", rpm=10, tpm=10_000, concurrent=20),
        LimitConfig(scope="user", rpm=1),
    )
    w = _window(clock())

    async def go() -> None:
        await q.admit(ALICE, 300)
        before = {k: await state.get(k) for k in (f"q:0:tenant:acme:r:{w}", f"q:0:tenant:acme:t:{w}",
                                                   "q:0:tenant:acme:c", f"q:1:user:acme/alice:r:{w}")}
        assert before == {f"q:0:tenant:acme:r:{w}": "1", f"q:0:tenant:acme:t:{w}": "300",
                          "q:0:tenant:acme:c": "1", f"q:1:user:acme/alice:r:{w}": "1"}
        for _ in range(5):
            with pytest.raises(RateLimited):
                await q.admit(ALICE, 300)
        after = {k: await state.get(k) for k in before}
        assert after == before
        # the tenant still has room for 9 more requests from other users
        for i in range(9):
            await q.admit(Subject("acme", f"u{i}", None), 1)
        with pytest.raises(RateLimited):
            await q.admit(Subject("acme", "u99", None), 1)

    asyncio.run(go())


def test_refusal_by_the_token_part_gives_back_the_same_rules_request_count():
    q, state, clock = _quotas(LimitConfig(scope="tenant", rpm=5, tpm=100))
    w = _window(clock())

    async def go() -> None:
        with pytest.raises(RateLimited):
            await q.admit(ALICE, 101)  # oversized
        await q.admit(ALICE, 80)
        with pytest.raises(RateLimited):
            await q.admit(ALICE, 30)
        assert await state.get(f"q:0:tenant:acme:r:{w}") == "1"
        assert await state.get(f"q:0:tenant:acme:t:{w}") == "80"

    asyncio.run(go())


def test_headers_keep_the_tightest_rule():
    q, _, _ = _quotas(LimitConfig(scope="tenant", rpm=10), LimitConfig(scope="user", rpm=5))

    async def go() -> None:
        h = await q.admit(ALICE, 1)  # tenant: 9 left of 10; alice: 4 left of 5
        assert h.headers["x-ratelimit-limit-requests"] == "5"
        assert h.headers["x-ratelimit-remaining-requests"] == "4"

    asyncio.run(go())

    q, _, _ = _quotas(LimitConfig(scope="user", rpm=5), LimitConfig(scope="tenant", rpm=10))

    async def go2() -> None:
        for i in range(8):
            await q.admit(Subject("acme", f"u{i}", None), 1)
        h = await q.admit(ALICE, 1)  # alice: 4 left of 5; the tenant: 1 left of 10
        assert h.headers["x-ratelimit-limit-requests"] == "10"
        assert h.headers["x-ratelimit-remaining-requests"] == "1"

    asyncio.run(go2())

    q, _, _ = _quotas(LimitConfig(scope="tenant", rpm=10, tpm=1000), LimitConfig(scope="user", tpm=100))

    async def go3() -> None:
        h = await q.admit(ALICE, 60)  # requests from the tenant rule, tokens from alice's (40 < 940)
        assert h.headers["x-ratelimit-limit-requests"] == "10"
        assert h.headers["x-ratelimit-limit-tokens"] == "100"
        assert h.headers["x-ratelimit-remaining-tokens"] == "40"

    asyncio.run(go3())


def test_many_concurrent_admits_never_exceed_the_limits():
    q, state, clock = _quotas(
        LimitConfig(scope="tenant", rpm=50),
        LimitConfig(scope="user", tpm=1000),
        LimitConfig(scope="key", concurrent=10),  # binding: 3 keys x 10 slots
    )
    w = _window(clock())

    async def go() -> None:
        subjects = [Subject("acme", f"u{i % 4}", f"k{i % 3}") for i in range(300)]
        results = await asyncio.gather(*(q.admit(s, 30) for s in subjects), return_exceptions=True)
        ok = [s for s, r in zip(subjects, results, strict=True) if not isinstance(r, BaseException)]
        errs = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(e, RateLimited) for e in errs)
        assert len(ok) == 30
        # the refusals by the key rule gave back the tenant's requests and the users' tokens
        assert await state.get(f"q:0:tenant:acme:r:{w}") == "30"
        for u in range(4):
            n = sum(s.user == f"u{u}" for s in ok)
            assert int(await state.get(f"q:1:user:acme/u{u}:t:{w}") or 0) == 30 * n
        assert [await state.get(f"q:2:key:acme/k{k}:c") for k in range(3)] == ["10", "10", "10"]

    asyncio.run(go())


def test_gather_of_admits_admits_exactly_the_limit():
    q, state, clock = _quotas(LimitConfig(scope="tenant", rpm=50))

    async def go() -> None:
        results = await asyncio.gather(*(q.admit(ALICE, 1) for _ in range(200)), return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 50
        assert await state.get(f"q:0:tenant:acme:r:{_window(clock())}") == "50"

    asyncio.run(go())


# ---- budgets ---------------------------------------------------------------------------------------


def _budgets(*budgets: BudgetConfig, at: float, on_spend: Any = None) -> tuple[Budgets, MemoryState, Clock]:
    clock = Clock(at)
    state = MemoryState(clock=clock)
    return Budgets(budgets, state, clock=clock, on_spend=on_spend), state, clock


MAR10 = utc(2024, 3, 10, 12)


def test_nano_conversions_are_exact():
    assert to_nano(Decimal("0.01")) == 10_000_000
    assert to_nano(Decimal("1.000000001")) == 1_000_000_001
    assert from_nano(1_234_567_891) == Decimal("1.234567891")
    assert from_nano(float(10_000_000)) == Decimal("0.010000000")
    assert from_nano(to_nano(Decimal("19.99"))) == Decimal("19.99")


def test_hard_budget_refuses_once_reservations_would_exceed_it():
    b = BudgetConfig(name="monthly", scope="tenant", limit_usd="1.00")
    budgets, state, _ = _budgets(b, at=MAR10)
    key = "b:monthly:tenant:acme:2024-03"

    async def go() -> None:
        await budgets.reserve(ALICE, Decimal("0.40"))
        await budgets.reserve(BOB, Decimal("0.40"))
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(ALICE, Decimal("0.21"))
        assert ei.value.status == 429 and ei.value.code == "budget_exceeded"
        assert ei.value.headers["x-bastion-budget"] == "monthly"
        assert await state.get(key) == str(800_000_000)
        await budgets.reserve(ALICE, Decimal("0.20"))  # exactly to the limit
        assert await state.get(key) == str(NANO)
        other = await budgets.reserve(Subject("globex", "alice", None), Decimal("0.90"))  # another tenant
        assert len(other.reservations) == 1

    asyncio.run(go())


def test_500_concurrent_reserves_of_a_cent_against_a_dollar_admit_exactly_100():
    b = BudgetConfig(name="monthly", scope="tenant", limit_usd=1.00)
    budgets, state, _ = _budgets(b, at=MAR10)

    async def go() -> None:
        results = await asyncio.gather(*(budgets.reserve(ALICE, Decimal("0.01")) for _ in range(500)),
                                       return_exceptions=True)
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(admitted) == 100
        assert len(refused) == 400 and all(isinstance(r, BudgetExceeded) for r in refused)
        assert await state.get("b:monthly:tenant:acme:2024-03") == str(NANO)

    asyncio.run(go())


def test_settle_replaces_reservation_by_actual_and_release_gives_back_all():
    b = BudgetConfig(name="monthly", scope="tenant", limit_usd="1")
    budgets, state, _ = _budgets(b, at=MAR10)
    key = "b:monthly:tenant:acme:2024-03"

    async def go() -> None:
        h1 = await budgets.reserve(ALICE, Decimal("0.60"))
        h2 = await budgets.reserve(ALICE, Decimal("0.40"))
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(ALICE, Decimal("0.01"))
        await budgets.settle(h1, Decimal("0.10"))  # cost far less than its worst case
        assert await state.get(key) == str(500_000_000)
        assert await state.get(key + ":settled") == str(100_000_000)
        assert h1.reservations == []
        await budgets.settle(h1, Decimal("0.10"))  # settling twice is harmless
        assert await state.get(key) == str(500_000_000)
        h3 = await budgets.reserve(ALICE, Decimal("0.50"))
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(ALICE, Decimal("0.01"))
        await budgets.release(h2)
        await budgets.release(h3)
        assert await state.get(key) == str(100_000_000)
        assert await state.get(key + ":settled") == str(100_000_000)  # releases settle nothing

    asyncio.run(go())


def test_refusal_by_one_budget_releases_the_others():
    tenant = BudgetConfig(name="team", scope="tenant", limit_usd=10)
    user = BudgetConfig(name="per-user", scope="user", limit_usd=1)
    budgets, state, _ = _budgets(tenant, user, at=MAR10)

    async def go() -> None:
        h = await budgets.reserve(ALICE, Decimal("0.9"))
        assert [r.who for r in h.reservations] == ["tenant:acme", "user:acme/alice"]
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(ALICE, Decimal("0.2"))
        assert "'per-user'" in ei.value.message and "user 'acme/alice'" in ei.value.message
        assert await state.get("b:team:tenant:acme:2024-03") == str(900_000_000)
        assert await state.get("b:per-user:user:acme/alice:2024-03") == str(900_000_000)
        await budgets.reserve(BOB, Decimal("0.2"))
        assert await state.get("b:team:tenant:acme:2024-03") == str(1_100_000_000)

    asyncio.run(go())


def test_soft_budget_never_refuses_but_flags():
    b = BudgetConfig(name="soft-cap", scope="tenant", limit_usd=1, mode="soft")
    budgets, state, _ = _budgets(b, at=MAR10)

    async def go() -> None:
        h = await budgets.reserve(ALICE, Decimal("0.6"))
        assert h.flags == []
        h = await budgets.reserve(ALICE, Decimal("0.4"))
        assert h.flags == []  # exactly at the limit is not over it
        for _ in range(20):
            h = await budgets.reserve(ALICE, Decimal("0.6"))
            assert h.flags == ["budget_exceeded:soft-cap"]
        assert await state.get("b:soft-cap:tenant:acme:2024-03") == str(13 * NANO)

    asyncio.run(go())


def test_day_budget_resets_at_utc_midnight_and_the_refusal_says_so():
    b = BudgetConfig(name="daily", scope="user", limit_usd="2.50", period="day")
    before_midnight = utc(2024, 3, 10, 23, 59, 0) + 59.5
    budgets, state, clock = _budgets(b, at=before_midnight)

    async def go() -> None:
        await budgets.reserve(ALICE, Decimal("2.25"))
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(ALICE, Decimal("0.30"))
        msg = ei.value.message
        assert "budget 'daily'" in msg
        assert "user 'acme/alice'" in msg
        assert "$2.25 of $2.50" in msg
        assert "$0.3" in msg
        assert "2024-03-11T00:00:00Z" in msg
        assert await state.get("b:daily:user:acme/alice:2024-03-10") == str(2_250_000_000)
        clock.set(utc(2024, 3, 11))  # UTC midnight: a new day, a new key
        h = await budgets.reserve(ALICE, Decimal("2.50"))
        assert h.reservations[0].key == "b:daily:user:acme/alice:2024-03-11"
        assert h.reservations[0].period_end == utc(2024, 3, 12)

    asyncio.run(go())


def test_day_budget_retry_after_does_not_end_before_the_reset():
    b = BudgetConfig(name="daily", scope="tenant", limit_usd=1, period="day")
    now = utc(2024, 3, 10, 23, 58, 0) + 0.5  # 119.5 s before midnight
    budgets, _, _ = _budgets(b, at=now)

    async def go() -> None:
        await budgets.reserve(ALICE, Decimal("1"))
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(ALICE, Decimal("0.01"))
        assert int(ei.value.headers["retry-after"]) >= math.ceil(utc(2024, 3, 11) - now)

    asyncio.run(go())


def test_month_budget_resets_at_the_month_start():
    b = BudgetConfig(name="monthly", scope="tenant", limit_usd=5, period="month")
    budgets, _, clock = _budgets(b, at=utc(2024, 2, 29, 23, 30))  # leap day

    async def go() -> None:
        h = await budgets.reserve(ALICE, Decimal("5"))
        assert h.reservations[0].key == "b:monthly:tenant:acme:2024-02"
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(ALICE, Decimal("0.000000001"))
        assert "2024-03-01T00:00:00Z" in ei.value.message
        assert ei.value.headers["retry-after"] == "1800"
        clock.set(utc(2024, 3, 1) - 0.001)
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(ALICE, Decimal("0.01"))
        clock.set(utc(2024, 3, 1))
        h2 = await budgets.reserve(ALICE, Decimal("5"))
        assert h2.reservations[0].key == "b:monthly:tenant:acme:2024-03"
        # a settlement after the month turned still corrects the month it was reserved in
        await budgets.settle(h, Decimal("1"))
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(ALICE, Decimal("0.01"))  # March is still full

    asyncio.run(go())


def test_rolling_budget_window_and_settlement_in_the_reservations_bucket():
    b = BudgetConfig(name="hourly", scope="tenant", limit_usd=1, period="rolling", window_s=60)
    budgets, state, clock = _budgets(b, at=T0 + 0.3)
    key = "b:hourly:tenant:acme:rolling"

    async def go() -> None:
        h = await budgets.reserve(ALICE, Decimal("1"))
        assert h.reservations[0].at == T0 + 0.3
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(ALICE, Decimal("0.01"))
        assert "spend older than 60 s stops counting" in ei.value.message
        assert ei.value.headers["retry-after"] == "60"
        clock.set(T0 + 50)
        await budgets.settle(h, Decimal("0.25"))  # lands in the T0 bucket, not the T0+50 one
        assert await state.window_sum(key, 60) == 250_000_000
        h2 = await budgets.reserve(ALICE, Decimal("0.75"))
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(ALICE, Decimal("0.01"))
        clock.set(T0 + 61)  # the T0 bucket (reservation and its settlement) left the window together
        assert await state.window_sum(key, 60) == 750_000_000
        await budgets.reserve(ALICE, Decimal("0.25"))
        await budgets.release(h2)
        assert await state.window_sum(key, 60) == 250_000_000
        clock.set(T0 + 200)
        assert await state.window_sum(key, 60) == 0

    asyncio.run(go())


def test_on_spend_receives_settled_totals_not_reservations():
    calls: list[tuple[str, str, int, int, str]] = []
    b = BudgetConfig(name="monthly", scope="tenant", limit_usd=10)
    d = BudgetConfig(name="daily", scope="user", limit_usd=1, period="day")
    budgets, _, _ = _budgets(b, d, at=MAR10,
                             on_spend=lambda bc, who, spent, limit, pid: calls.append((bc.name, who, spent, limit, pid)))

    async def go() -> None:
        h1 = await budgets.reserve(ALICE, Decimal("0.5"))
        h2 = await budgets.reserve(ALICE, Decimal("0.4"))
        assert calls == []  # reservations are not spend
        await budgets.settle(h1, Decimal("0.1"))
        await budgets.settle(h2, Decimal("0.2"))
        h3 = await budgets.reserve(ALICE, Decimal("0.5"))
        await budgets.release(h3)  # nothing spent: no call
        assert calls == [
            ("monthly", "tenant:acme", 100_000_000, 10 * NANO, "2024-03"),
            ("daily", "user:acme/alice", 100_000_000, NANO, "2024-03-10"),
            ("monthly", "tenant:acme", 300_000_000, 10 * NANO, "2024-03"),
            ("daily", "user:acme/alice", 300_000_000, NANO, "2024-03-10"),
        ]
        calls.clear()
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(ALICE, Decimal("0.8"))  # daily: 0.3 spent + 0.8 > 1
        assert calls == [("daily", "user:acme/alice", NANO, NANO, "2024-03-10")]  # a refusal reports the limit

    asyncio.run(go())


# ---- alerts ----------------------------------------------------------------------------------------


async def _drain(a: Alerts) -> None:
    for _ in range(100):
        pending = a.background.pending()
        if not pending:
            return
        await asyncio.gather(*pending)


class _FastAsyncio:
    """The asyncio module as alerts.py sees it, with sleep recorded and not waited."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        await asyncio.sleep(0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "alerts.db"))
    yield s
    s.close()


def test_budget_thresholds_fire_once_each(store: SQLiteStore):
    b = BudgetConfig(name="monthly", scope="tenant", limit_usd=10)
    state = MemoryState()

    async def go() -> None:
        a = Alerts(AlertsConfig(), state, store)
        replica = Alerts(AlertsConfig(), state, store)  # another replica sharing the state
        for spent in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12):
            for _ in range(5):
                a.on_budget_spend(b, "tenant:acme", spent * NANO, 10 * NANO, "2024-03")
                replica.on_budget_spend(b, "tenant:acme", spent * NANO, 10 * NANO, "2024-03")
        await _drain(a)
        await _drain(replica)
        rows = store.list_alerts(kind="budget")
        assert sorted(r["data"]["threshold"] for r in rows) == [0.5, 0.8, 1.0]
        assert a.fired + replica.fired == 3
        by = {r["data"]["threshold"]: r for r in rows}
        assert by[1.0]["severity"] == "critical" and by[0.5]["severity"] == "warning"
        assert by[0.5]["subject"] == "tenant:acme"
        assert by[0.5]["data"]["spent_usd"] == "5.000000000" and by[0.5]["data"]["period"] == "2024-03"
        assert "reached 50%" in by[0.5]["message"] and "'monthly'" in by[0.5]["message"]
        # another subject, and the next period, have their own thresholds
        a.on_budget_spend(b, "tenant:globex", 6 * NANO, 10 * NANO, "2024-03")
        a.on_budget_spend(b, "tenant:acme", 6 * NANO, 10 * NANO, "2024-04")
        await _drain(a)
        assert len(store.list_alerts(kind="budget")) == 5
        a.on_budget_spend(b, "tenant:acme", 6 * NANO, 0, "2024-05")  # no limit: nothing to judge
        await _drain(a)
        assert len(store.list_alerts(kind="budget")) == 5

    asyncio.run(go())


def test_spend_rate_fires_when_the_last_hour_passes_the_rate_once_per_hour(store, monkeypatch):
    clock = Clock(HOUR0 + 10)
    monkeypatch.setattr(alerts_mod, "time", types.SimpleNamespace(time=clock))
    cfg = AlertsConfig(spend_rate=(SpendRateConfig(scope="tenant", usd_per_hour=1),),
                       outliers=OutlierConfig(enabled=False))

    async def go() -> None:
        a = Alerts(cfg, MemoryState(clock=clock), store)
        a.on_cost(ALICE, Decimal("0.6"))
        await _drain(a)
        assert store.list_alerts(kind="spend_rate") == []
        clock.set(HOUR0 + 20)
        a.on_cost(BOB, Decimal("0.6"))  # 1.2 in the last hour
        await _drain(a)
        rows = store.list_alerts(kind="spend_rate")
        assert len(rows) == 1 and rows[0]["subject"] == "tenant:acme"
        assert rows[0]["data"]["usd_per_hour"] == "1"
        for t in (30, 1800, 3500):
            clock.set(HOUR0 + t)
            a.on_cost(ALICE, Decimal("0.6"))
        a.on_cost(Subject("globex", None, None), Decimal("0.1"))  # another tenant, below its rate
        a.on_cost(ALICE, Decimal("0"))  # free requests are ignored
        await _drain(a)
        assert len(store.list_alerts(kind="spend_rate")) == 1
        clock.set(HOUR0 + 3600 + 5)  # the next hour, still above the rate
        a.on_cost(ALICE, Decimal("0.6"))
        await _drain(a)
        assert len(store.list_alerts(kind="spend_rate")) == 2
        clock.set(HOUR0 + 3 * 3600)  # the window emptied: 0.6 alone is below the rate
        a.on_cost(ALICE, Decimal("0.6"))
        await _drain(a)
        assert len(store.list_alerts(kind="spend_rate")) == 2

    asyncio.run(go())


def _outlier_alerts(store: SQLiteStore, spends: dict[str, str], **outliers: Any) -> list[dict[str, Any]]:
    cfg = AlertsConfig(outliers=OutlierConfig(**outliers))

    async def go() -> None:
        a = Alerts(cfg, MemoryState(), store)
        for user, usd in spends.items():
            a.on_cost(Subject("acme", user, None), Decimal(usd) / 2)
            a.on_cost(Subject("acme", user, None), Decimal(usd) / 2)
        a.on_cost(Subject("acme", None, "k1"), Decimal("100"))  # no user: not part of the comparison
        await a.check_outliers()
        await a.check_outliers()  # once per window
        await _drain(a)

    asyncio.run(go())
    return store.list_alerts(kind="outlier")


def test_outlier_user_fires_once(store):
    rows = _outlier_alerts(store, {"u1": "1", "u2": "1.2", "u3": "0.9", "u4": "1", "u5": "1.1", "whale": "10.5"})
    assert len(rows) == 1
    r = rows[0]
    assert r["subject"] == "user:acme/whale"
    assert r["data"]["users"] == 6 and Decimal(r["data"]["spent_usd"]) == Decimal("10.5")
    assert Decimal(r["data"]["tenant_median_usd"]) == Decimal("1.05")
    assert "'whale'" in r["message"] and "'acme'" in r["message"]


def test_no_outlier_with_fewer_than_min_users(store):
    assert _outlier_alerts(store, {"u1": "1", "u2": "1", "u3": "1", "whale": "10"}) == []
    assert _outlier_alerts(store, {"u1": "1", "u2": "1", "u3": "1", "whale": "10"}, min_users=4) != []


def test_no_outlier_below_min_usd(store):
    spends = {"u1": "0.01", "u2": "0.01", "u3": "0.01", "u4": "0.01", "u5": "0.01", "whale": "0.5"}
    assert _outlier_alerts(store, spends) == []
    assert _outlier_alerts(store, spends, min_usd="0.25") != []


async def _hook_server(fail_first: int) -> tuple[web.AppRunner, str, list[tuple[dict[str, str], bytes]]]:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response(status=503 if len(seen) <= fail_first else 204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook", seen


def _fire_and_deliver(store: SQLiteStore, monkeypatch, fail_first: int, max_attempts: int,
                      secret: str | None = None) -> tuple[list[float], dict[str, Any], list]:
    fast = _FastAsyncio()
    monkeypatch.setattr(alerts_mod, "asyncio", fast)
    if secret is not None:
        monkeypatch.setenv("BASTION_TEST_HOOK_SECRET", secret)
    out: dict[str, Any] = {}

    async def go() -> None:
        runner, url, seen = await _hook_server(fail_first)
        try:
            hook = WebhookConfig(url=url, max_attempts=max_attempts, timeout_s=5,
                                 secret_env="BASTION_TEST_HOOK_SECRET" if secret is not None else None)
            a = Alerts(AlertsConfig(webhooks=(hook,), outliers=OutlierConfig(enabled=False)), MemoryState(), store)
            alert = await a.fire("alert:test:1", "budget", "warning", "tenant:acme", "test alert", {"x": 1})
            assert alert is not None
            assert await a.fire("alert:test:1", "budget", "warning", "tenant:acme", "again", {}) is None
            await _drain(a)
            await a.stop()
            out["alert"], out["seen"], out["url"] = alert, seen, url
        finally:
            await runner.cleanup()

    asyncio.run(go())
    rows = store.list_alerts()
    assert len(rows) == 1
    return fast.sleeps, {**out, "row": rows[0]}, out["seen"]


def test_webhook_retried_with_backoff_until_2xx(store, monkeypatch):
    sleeps, res, seen = _fire_and_deliver(store, monkeypatch, fail_first=3, max_attempts=6)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(seen) == 4
    alert_id = res["alert"]["id"]
    assert all(h["x-bastion-alert-id"] == alert_id for h, _ in seen)
    assert all(orjson.loads(body)["id"] == alert_id for _, body in seen)
    assert all("x-bastion-signature" not in h for h, _ in seen)
    row = res["row"]
    assert row["id"] == alert_id and row["delivered_at"] is not None
    [delivery] = row["deliveries"]
    assert delivery["url"] == res["url"] and delivery["ok"] is True
    assert [x["status"] for x in delivery["attempts"]] == [503, 503, 503, 204]


def test_webhook_gives_up_after_max_attempts(store, monkeypatch):
    sleeps, res, seen = _fire_and_deliver(store, monkeypatch, fail_first=100, max_attempts=3)
    assert sleeps == [0.5, 1.0]
    assert len(seen) == 3
    row = res["row"]
    assert row["delivered_at"] is None
    [delivery] = row["deliveries"]
    assert delivery["ok"] is False
    assert [x["status"] for x in delivery["attempts"]] == [503, 503, 503]


def test_webhook_signature_verifies_with_the_secret(store, monkeypatch):
    secret = "s3cr3t-for-tests"
    _, res, seen = _fire_and_deliver(store, monkeypatch, fail_first=1, max_attempts=3, secret=secret)
    assert len(seen) == 2
    for headers, body in seen:
        sig = headers["x-bastion-signature"]
        assert sig.startswith("sha256=")
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(sig.removeprefix("sha256="), expected)
        wrong = hmac.new(b"another", body, hashlib.sha256).hexdigest()
        assert sig.removeprefix("sha256=") != wrong
    assert res["row"]["delivered_at"] is not None


def test_webhook_connection_errors_are_recorded(store, monkeypatch):
    fast = _FastAsyncio()
    monkeypatch.setattr(alerts_mod, "asyncio", fast)

    async def go() -> None:
        runner, url, _ = await _hook_server(0)
        await runner.cleanup()  # nothing listens there any more
        hook = WebhookConfig(url=url, max_attempts=2, timeout_s=2)
        a = Alerts(AlertsConfig(webhooks=(hook,), outliers=OutlierConfig(enabled=False)), MemoryState(), store)
        await a.fire("alert:test:2", "outlier", "warning", "user:acme/x", "m", {})
        await _drain(a)
        await a.stop()

    asyncio.run(go())
    [row] = store.list_alerts()
    assert row["delivered_at"] is None
    attempts = row["deliveries"][0]["attempts"]
    assert len(attempts) == 2 and all("error" in x for x in attempts)


# ---- config validation -----------------------------------------------------------------------------


def test_money_from_floats_is_the_written_amount():
    assert BudgetConfig(name="b", scope="tenant", limit_usd=19.99).limit_usd == Decimal("19.99")
    assert BudgetConfig(name="b", scope="tenant", limit_usd=0.1).limit_usd == Decimal("0.1")
    assert BudgetConfig(name="b", scope="tenant", limit_usd=100).limit_usd == Decimal("100")
    assert BudgetConfig(name="b", scope="tenant", limit_usd="0.000000001").limit_usd == Decimal("1e-9")
    assert SpendRateConfig(scope="user", usd_per_hour=2.5).usd_per_hour == Decimal("2.5")
    assert OutlierConfig(min_usd=0.3).min_usd == Decimal("0.3")
    p = PriceOverride(input=0.15, output=0.6, cached_input=0.075)
    assert (p.input, p.output, p.cached_input, p.reasoning) == (Decimal("0.15"), Decimal("0.6"), Decimal("0.075"), None)
    assert BudgetConfig(name="b", scope="tenant", limit_usd=0).limit_usd == 0


@pytest.mark.parametrize("bad", [-1, -0.01, "-5", float("nan"), "NaN", float("inf"), "Infinity", "abc", ""])
def test_money_rejects_negative_nan_infinite_and_garbage(bad):
    with pytest.raises(ValidationError):
        BudgetConfig(name="b", scope="tenant", limit_usd=bad)
    with pytest.raises(ValidationError):
        SpendRateConfig(scope="tenant", usd_per_hour=bad)
    with pytest.raises(ValidationError):
        PriceOverride(input=bad, output=1)
    with pytest.raises(ValidationError):
        OutlierConfig(min_usd=bad)


def test_limit_needs_one_of_rpm_tpm_concurrent():
    with pytest.raises(ValidationError, match="at least one of rpm, tpm, concurrent"):
        LimitConfig(scope="tenant")
    for field in ("rpm", "tpm", "concurrent"):
        assert getattr(LimitConfig(scope="tenant", **{field: 1}), field) == 1
        with pytest.raises(ValidationError):
            LimitConfig(scope="tenant", **{field: 0})
    with pytest.raises(ValidationError):
        LimitConfig(scope="team", rpm=1)
    with pytest.raises(ValidationError):
        LimitConfig(scope="tenant", rpm=1, window_s=0)
    with pytest.raises(ValidationError):
        LimitConfig(scope="tenant", rpm=1, burst=3)  # unknown keys are refused


def test_rolling_budget_needs_window_s_and_only_it_does():
    with pytest.raises(ValidationError, match="window_s is required"):
        BudgetConfig(name="b", scope="tenant", limit_usd=1, period="rolling")
    with pytest.raises(ValidationError, match="window_s is required"):
        BudgetConfig(name="b", scope="tenant", limit_usd=1, period="day", window_s=3600)
    with pytest.raises(ValidationError):
        BudgetConfig(name="b", scope="tenant", limit_usd=1, period="rolling", window_s=30)
    assert BudgetConfig(name="b", scope="tenant", limit_usd=1, period="rolling", window_s=3600).window_s == 3600
    with pytest.raises(ValidationError, match="alert_at"):
        BudgetConfig(name="b", scope="tenant", limit_usd=1, alert_at=(0, 0.5))
    with pytest.raises(ValidationError):
        BudgetConfig(name="", scope="tenant", limit_usd=1)


def test_webhook_config():
    assert WebhookConfig(url="https://example.com/h").max_attempts == 6
    with pytest.raises(ValidationError, match="http"):
        WebhookConfig(url="ftp://example.com/h")
    with pytest.raises(ValidationError):
        WebhookConfig(url="http://x", max_attempts=0)


def _config(**extra: Any) -> BastionConfig:
    return BastionConfig.model_validate({"tenants": {"acme": {}, "globex": {}}, **extra})


def test_bastion_config_accepts_known_tenant_references():
    c = _config(
        limits=[{"scope": "tenant", "match": "acme", "rpm": 10}, {"scope": "user", "tenant": "globex", "tpm": 100}],
        budgets=[{"name": "a", "scope": "tenant", "match": "globex", "limit_usd": 5.5},
                 {"name": "b", "scope": "key", "tenant": "acme", "limit_usd": 1, "period": "day"}],
    )
    assert c.budgets[0].limit_usd == Decimal("5.5") and len(c.limits) == 2
    # a user or key match is not a tenant name
    _config(limits=[{"scope": "user", "match": "nobody-in-particular", "rpm": 1}])


@pytest.mark.parametrize(("section", "rule", "where"), [
    ("limits", {"scope": "tenant", "match": "initech", "rpm": 1}, ("limits", 0, "match")),
    ("limits", {"scope": "user", "tenant": "initech", "rpm": 1}, ("limits", 0, "tenant")),
    ("budgets", {"name": "x", "scope": "tenant", "match": "initech", "limit_usd": 1}, ("budgets", 0, "match")),
    ("budgets", {"name": "x", "scope": "key", "tenant": "initech", "limit_usd": 1}, ("budgets", 0, "tenant")),
])
def test_bastion_config_rejects_unknown_tenants(section, rule, where):
    with pytest.raises(ValidationError) as ei:
        _config(**{section: [rule]})
    assert [(e["loc"], e["msg"].split(" (known")[0]) for e in ei.value.errors()] == [(where, "unknown tenant 'initech'")]


def test_bastion_config_rejects_duplicate_budget_names():
    with pytest.raises(ValidationError, match="the name 'team' is used twice"):
        _config(budgets=[{"name": "team", "scope": "tenant", "limit_usd": 1},
                         {"name": "team", "scope": "user", "limit_usd": 2}])
