"""Spend reports from the request log: what ``bastion costs`` prints and ``GET /admin/costs`` serves."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bastion.store.sqlite import COST_DIMENSIONS, SQLiteStore

from .budgets import from_nano

DIMENSIONS = tuple(COST_DIMENSIONS)


def parse_by(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return ["tenant"]
    parts = value.split(",") if isinstance(value, str) else list(value)
    by = [p.strip() for p in parts if p.strip()]
    bad = [p for p in by if p not in COST_DIMENSIONS]
    if bad:
        raise ValueError(f"cannot group costs by {', '.join(bad)}; choose from: {', '.join(DIMENSIONS)}")
    return by


def cost_report(store: SQLiteStore, *, by: Sequence[str], filters: dict[str, Any] | None = None,
                since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
    rows = store.cost_rows(by=by, filters=filters, since=since, until=until)
    out = []
    for r in rows:
        usd = from_nano(r.pop("cost_nusd") or 0)
        saved = from_nano(r.pop("saved_nusd", 0) or 0)
        out.append({**r, "cost_usd": f"{usd:f}", "saved_usd": f"{saved:f}"})
    return out


def total_usd(rows: Sequence[dict[str, Any]]) -> Decimal:
    return sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
