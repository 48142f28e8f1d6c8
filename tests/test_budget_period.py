"""A budget's period (day, month, in UTC) is computed once per period and kept: the kept one must roll over
exactly at midnight and at the month's end, and a clock that goes back must get its own period again."""

from __future__ import annotations

import datetime as dt

from bastion.config.metering import BudgetConfig
from bastion.metering.budgets import _period


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp()


def test_kept_period_rolls_over_at_day_and_month_boundaries_and_back() -> None:
    day = BudgetConfig(name="d", scope="tenant", period="day", limit_usd=1)
    month = BudgetConfig(name="m", scope="tenant", period="month", limit_usd=1)
    sequence = [
        ("2026-12-31T23:59:59.999", ("2026-12-31", _ts("2027-01-01T00:00:00")), ("2026-12", _ts("2027-01-01T00:00:00"))),
        ("2027-01-01T00:00:00", ("2027-01-01", _ts("2027-01-02T00:00:00")), ("2027-01", _ts("2027-02-01T00:00:00"))),
        ("2027-01-01T13:00:00", ("2027-01-01", _ts("2027-01-02T00:00:00")), ("2027-01", _ts("2027-02-01T00:00:00"))),
        ("2026-12-31T23:00:00", ("2026-12-31", _ts("2027-01-01T00:00:00")), ("2026-12", _ts("2027-01-01T00:00:00"))),
        ("2028-02-29T23:59:59", ("2028-02-29", _ts("2028-03-01T00:00:00")), ("2028-02", _ts("2028-03-01T00:00:00"))),
        ("2028-03-01T00:00:00", ("2028-03-01", _ts("2028-03-02T00:00:00")), ("2028-03", _ts("2028-04-01T00:00:00"))),
    ]
    for iso, want_day, want_month in sequence:
        assert _period(day, _ts(iso)) == want_day, iso
        assert _period(month, _ts(iso)) == want_month, iso
    rolling = BudgetConfig(name="r", scope="tenant", period="rolling", window_s=3600, limit_usd=1)
    assert _period(rolling, _ts("2027-01-01T00:00:00")) == ("rolling", None)
