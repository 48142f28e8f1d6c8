"""Unit tests of the budget-hardening pieces of metering, in process with real SQLite and the real in-process
state: the rebuild of counters from the request log, a reservation extended for an extra call, and what a
cut stream is billed for."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bastion.config.metering import BudgetConfig, LimitConfig
from bastion.metering.budgets import BudgetExceeded, Budgets, to_nano
from bastion.metering.cut import cut_usage
from bastion.metering.quotas import Quotas
from bastion.metering.rebuild import rebuild
from bastion.metering.subjects import Subject
from bastion.state import MemoryState
from bastion.store.sqlite import SQLiteStore


def _row(i: int, at: float, tenant: str, user: str | None, nusd: int, tokens: int = 10) -> dict:
    return {"id": f"r{i}", "received_at": at, "tenant": tenant, "user": user, "key_id": "k1", "endpoint": "chat",
            "dialect": "openai", "status": 200, "stream": False, "cost_nusd": nusd, "total_tokens": tokens}


def test_rebuild_seeds_calendar_and_rolling_budgets_and_tpm_windows(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    now = time.time()
    store.write_requests([
        _row(1, now - 10, "acme", "ann", 400_000_000, 100),
        _row(2, now - 5, "acme", "ann", 300_000_000, 50),
        _row(3, now - 7200, "acme", "ann", 900_000_000),  # outside the rolling hour (still in today, maybe)
        _row(4, now - 3, "acme", None, 200_000_000),  # no user: the anonymous user
        _row(5, now - 3, "globex", "ann", 500_000_000),  # another tenant's ann
    ])
    state = MemoryState()
    day = BudgetConfig(name="day", scope="tenant", match="globex", limit_usd="1", period="day")
    hour = BudgetConfig(name="hour", scope="user", tenant="acme", limit_usd="1", period="rolling", window_s=3600)
    budgets = Budgets((day, hour), state)
    quotas = Quotas((LimitConfig(scope="user", tenant="acme", tpm=1000, window_s=86_400),), state)
    seeded = asyncio.run(rebuild(state, store, budgets, quotas, now=now))
    assert seeded["budget_subjects"] == 3  # globex; acme/ann and acme/- in the rolling hour

    async def check() -> None:
        # ann's rolling hour holds $0.70: a $0.31 request no longer fits, a $0.30 one does
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(Subject("acme", "ann", "k1"), Decimal("0.31"))
        hold = await budgets.reserve(Subject("acme", "ann", "k1"), Decimal("0.30"))
        await budgets.release(hold)
        # the anonymous user of acme holds $0.20
        with pytest.raises(BudgetExceeded) as ei:
            await budgets.reserve(Subject("acme", None, "k1"), Decimal("0.81"))
        assert "anonymous user of tenant 'acme'" in ei.value.message
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(Subject("globex", "ann", "k1"), Decimal("0.51"))
        # the tpm window: ann has used 150 (today) + 10 of the older row if it is still today
        used = 160 if time.gmtime(now - 7200).tm_yday == time.gmtime(now).tm_yday else 150
        hold_q = await quotas.admit(Subject("acme", "ann", "k1"), 1000 - used)
        await quotas.release(hold_q, 0)
        with pytest.raises(Exception, match="tokens"):
            await quotas.admit(Subject("acme", "ann", "k1"), 1001 - used)

    asyncio.run(check())
    # a second start on a state that already holds counters (a shared state) does not count twice
    assert asyncio.run(rebuild(state, store, budgets, quotas, now=now))["budget_subjects"] == 0


def test_extend_reserves_more_or_nothing() -> None:
    state = MemoryState()
    b = BudgetConfig(name="cap", scope="tenant", limit_usd="1.00", period="day")
    budgets = Budgets((b,), state)
    s = Subject("acme", None, None)

    async def run() -> None:
        hold = await budgets.reserve(s, Decimal("0.40"))
        await budgets.extend(hold, Decimal("0.40"))
        assert hold.reserved == to_nano(Decimal("0.80"))
        with pytest.raises(BudgetExceeded):
            await budgets.extend(hold, Decimal("0.30"))
        assert hold.reserved == to_nano(Decimal("0.80"))  # unchanged by the refusal
        other = await budgets.reserve(s, Decimal("0.20"))  # exactly what is left: the refusal took nothing
        await budgets.release(other)
        await budgets.settle(hold, Decimal("0.55"))  # both calls, priced: the whole hold is replaced
        hold2 = await budgets.reserve(s, Decimal("0.45"))
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(s, Decimal("0.01"))
        await budgets.release(hold2)

    asyncio.run(run())


def test_cut_usage_bills_the_estimate_unless_the_upstream_reported() -> None:
    est = {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47}
    # nothing reported (OpenAI stream cut before its usage chunk): the estimate
    assert cut_usage(None, "openai", est, False) == (
        {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47}, "openai", True)
    # Anthropic's message_start reported the prompt (it wins) and 1 output token so far (the count wins)
    usage, dialect, estimated = cut_usage({"input_tokens": 38, "output_tokens": 1, "cache_read_input_tokens": 2},
                                          "anthropic", est, False)
    assert usage == {"input_tokens": 38, "output_tokens": 7, "cache_read_input_tokens": 2}
    assert dialect == "anthropic" and estimated
    # the usage arrived before the cut: the upstream's counts are the bill
    final = {"prompt_tokens": 41, "completion_tokens": 5, "total_tokens": 46}
    assert cut_usage(final, "openai", est, True) == (final, "openai", False)
