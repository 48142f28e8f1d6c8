"""Budgets by reservation: before a call, reserve its worst-case cost; after it, settle the real cost.

Money is counted in integer nano-USD (1e-9 USD) in ``state/``: a reservation is one "add if the total
stays within the limit" (``incr_if`` for day/month periods, ``window_add_if`` for rolling windows), so
concurrent requests cannot overspend a hard budget, on one replica or (with Redis) on many.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from bastion.config.metering import BudgetConfig
from bastion.errors import BastionError
from bastion.state import State

from .subjects import Subject, applies, describe

NANO = Decimal("1e9")
_NO_LIMIT = 1 << 62


def to_nano(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value())


def from_nano(n: int | float) -> Decimal:
    return (Decimal(int(n)) / NANO).quantize(Decimal("1e-9"))


class BudgetExceeded(BastionError):
    status = 429
    code = "budget_exceeded"


@dataclass(slots=True)
class Reservation:
    budget: BudgetConfig
    who: str
    key: str
    amount: int  # nano-USD reserved
    at: float | None  # rolling windows: when (state clock), so that the settlement lands in the same bucket
    period_end: float | None


@dataclass(slots=True)
class BudgetHold:
    reservations: list[Reservation] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # soft budgets this request went over

    @property
    def reserved(self) -> int:
        """Nano-USD this request holds in each of its budgets (the same amount in each)."""
        return max((r.amount for r in self.reservations), default=0)


# (budget, who, spent nano-USD, limit nano-USD, period id) after a change: the alerting side decides
SpendListener = Callable[[BudgetConfig, str, int, int, str], None]


_CURRENT: dict[str, tuple[float, float, str]] = {}  # period kind -> (start, end, id) of the last one computed


def _period(budget: BudgetConfig, now: float) -> tuple[str, float | None]:
    """The period's id and its end (epoch seconds) for day/month budgets, in UTC (computed once per period:
    calendar arithmetic on every request was a measurable share of the admission's CPU)."""
    kind = budget.period
    if kind not in ("day", "month"):
        return "rolling", None
    hit = _CURRENT.get(kind)
    if hit is not None and hit[0] <= now < hit[1]:
        return hit[2], hit[1]
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    if kind == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        pid, end = start.strftime("%Y-%m-%d"), (start + dt.timedelta(days=1)).timestamp()
    else:
        days = calendar.monthrange(t.year, t.month)[1]
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        pid, end = start.strftime("%Y-%m"), (start + dt.timedelta(days=days)).timestamp()
    _CURRENT[kind] = (start.timestamp(), end, pid)
    return pid, end


def period_start(budget: BudgetConfig, now: float) -> float:
    """When the current period (day, month) or rolling window began, in epoch seconds."""
    if budget.period == "rolling":
        assert budget.window_s is not None
        return now - budget.window_s
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    if budget.period == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


class Budgets:
    def __init__(self, budgets: tuple[BudgetConfig, ...], state: State, clock: Callable[[], float] = time.time,
                 on_spend: SpendListener | None = None) -> None:
        self.budgets = budgets
        self.state = state
        self.clock = clock
        self.on_spend = on_spend

    def _key(self, b: BudgetConfig, who: str, now: float) -> tuple[str, str, float | None]:
        pid, end = _period(b, now)
        return f"b:{b.name}:{who}:{pid}", pid, end

    async def reserve(self, subject: Subject, worst_usd: Decimal) -> BudgetHold:
        hold = BudgetHold()
        amount = to_nano(worst_usd)
        now = self.clock()
        try:
            for b in self.budgets:
                who = applies(b, subject)
                if who is None:
                    continue
                key, pid, end = self._key(b, who, now)
                limit = to_nano(b.limit_usd) if b.mode == "hard" else _NO_LIMIT
                if b.period == "rolling":
                    assert b.window_s is not None
                    at = self.state.clock()
                    got = await self.state.window_add_if(key, amount, b.window_s, limit)
                else:
                    at = None
                    n = await self.state.incr_if(key, amount, limit, ttl_s=(end or now) - now + 86_400)
                    got = None if n is None else float(n)
                if got is None:
                    spent = await self._spent(b, key)
                    if self.on_spend is not None:
                        self.on_spend(b, who, max(spent, to_nano(b.limit_usd)), to_nano(b.limit_usd), pid)
                    raise self._exceeded(b, who, spent, worst_usd, end, now)
                if b.mode == "soft" and got > to_nano(b.limit_usd):
                    hold.flags.append(f"budget_exceeded:{b.name}")
                hold.reservations.append(Reservation(b, who, key, amount, at, end))
        except BudgetExceeded:
            await self.release(hold)
            raise
        return hold

    async def _spent(self, b: BudgetConfig, key: str) -> int:
        if b.period == "rolling":
            assert b.window_s is not None
            return int(await self.state.window_sum(key, b.window_s))
        v = await self.state.get(key)
        return int(v) if v is not None else 0

    def _exceeded(self, b: BudgetConfig, who: str, spent: int, worst: Decimal, end: float | None,
                  now: float) -> BudgetExceeded:
        label = describe(who)
        if end is not None:
            reset = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            when, retry = f"it resets at {reset}", max(1, math.ceil(end - now))
        else:
            assert b.window_s is not None
            when, retry = f"spend older than {b.window_s} s stops counting", min(b.window_s, 3600)
        msg = (f"budget {b.name!r} of {label} is spent: ${from_nano(spent).normalize():f} of "
               f"${b.limit_usd:f} used (including requests in flight) and this request may cost up to "
               f"${worst.normalize():f}; {when}")
        return BudgetExceeded(msg, headers={"retry-after": str(retry), "x-bastion-budget": b.name})

    async def extend(self, hold: BudgetHold, extra_usd: Decimal) -> None:
        """Reserve ``extra_usd`` more on every budget ``hold`` already holds (an extra upstream call of the
        same request: a JSON repair, a refusal fallback), or raise BudgetExceeded and change nothing."""
        amount = to_nano(extra_usd)
        if amount <= 0:
            return
        done: list[Reservation] = []
        now = self.clock()
        try:
            for r in hold.reservations:
                b = r.budget
                limit = to_nano(b.limit_usd) if b.mode == "hard" else _NO_LIMIT
                if b.period == "rolling":
                    assert b.window_s is not None
                    ok = await self.state.window_add_if(r.key, amount, b.window_s, limit) is not None
                else:
                    ok = await self.state.incr_if(r.key, amount, limit) is not None
                if not ok:
                    spent = await self._spent(b, r.key)
                    raise self._exceeded(b, r.who, spent, extra_usd, r.period_end, now)
                done.append(r)
        except BudgetExceeded:
            for r in done:
                await self._add(r, -amount, None)
            raise
        for r in hold.reservations:
            r.amount += amount

    async def _add(self, r: Reservation, delta: int, at: float | None) -> None:
        if r.budget.period == "rolling":
            assert r.budget.window_s is not None
            await self.state.window_add(r.key, delta, r.budget.window_s, at=at)
        else:
            await self.state.incr_if(r.key, delta, _NO_LIMIT)

    async def seed(self, b: BudgetConfig, who: str, spent: list[tuple[float, int]]) -> None:
        """Start a budget's counters from spend already in the request log: ``spent`` is (when, nano-USD)
        pairs in time order (epoch seconds), all in the current period or window."""
        total = sum(n for _, n in spent)
        if total <= 0:
            return
        now = self.clock()
        key, pid, end = self._key(b, who, now)
        if b.period == "rolling":
            assert b.window_s is not None
            offset = self.state.clock() - now  # the state measures rolling windows on its own clock
            for t, n in spent:
                await self.state.window_add(key, n, b.window_s, at=t + offset)
                await self.state.window_add(key + ":settled", n, b.window_s, at=t + offset)
        else:
            ttl = (end or now) - now + 86_400
            await self.state.incr_if(key, total, _NO_LIMIT, ttl_s=ttl)
            await self.state.incr_if(key + ":settled", total, _NO_LIMIT, ttl_s=ttl)

    async def settle(self, hold: BudgetHold, actual_usd: Decimal) -> None:
        """Replace each reservation with the real cost (released entirely when the call cost nothing)."""
        actual = to_nano(actual_usd)
        for r in hold.reservations:
            delta = actual - r.amount
            settled_key = r.key + ":settled"
            if r.budget.period == "rolling":
                assert r.budget.window_s is not None
                await self.state.window_add(r.key, delta, r.budget.window_s, at=r.at)
                settled = int(await self.state.window_add(settled_key, actual, r.budget.window_s)) if actual else 0
            else:
                await self.state.incr_if(r.key, delta, _NO_LIMIT)
                ttl = (r.period_end or 0) - self.clock() + 86_400
                settled = (await self.state.incr_if(settled_key, actual, _NO_LIMIT, ttl_s=ttl) or 0) if actual else 0
            if self.on_spend is not None and actual > 0:
                b = r.budget
                # a rolling budget's alerts re-arm each window length; a calendar budget's each period
                pid = f"w{int(self.clock() // b.window_s)}" if b.window_s else r.key.rsplit(":", 1)[1]
                self.on_spend(b, r.who, settled, to_nano(b.limit_usd), pid)
        hold.reservations.clear()

    async def release(self, hold: BudgetHold) -> None:
        await self.settle(hold, Decimal(0))
