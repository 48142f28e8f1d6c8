"""Rebuild budget (and quota token) counters from the request log when the gateway starts.

Budget state lives in ``state/``. With ``memory://`` it is gone after a restart, and a gateway that forgot
its spend would let every tenant spend a hard budget again (a red-team run: +83 % over the limit after one
restart, +182 % after two). So at start, for each configured budget, the spend of its current period (a
UTC day or month) or rolling window is summed from the request log's ``cost_nusd`` per tenant, user and key
(by ``received_at``), and each subject's counters are seeded: the reservation counter and its
``:settled`` twin, rolling windows at the times the requests arrived. The tokens of the current fixed
window of each ``tpm`` quota are seeded too.

The log is read after the log writer has ingested its spill file (``Gateway.start`` starts the writer
first), so records that had spilled count as well. What the log never received is not counted: the
requests in flight at a crash, and at most one flush window of records (``store.flush_interval_ms``) after
a ``kill -9``. With ``memory://`` state the rebuild is from this node's log only. A shared state that
already holds counters (it outlived this process) is left alone: it is rebuilt once, by the first process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from bastion.state import State
from bastion.store.sqlite import SQLiteStore

from .budgets import Budgets, from_nano, period_start
from .quotas import Quotas
from .subjects import Subject, applies

log = logging.getLogger("bastion.metering")

REBUILT_KEY = "meter:rebuilt"


def key_names(store: SQLiteStore) -> dict[str, str]:
    """Key id -> key name, for budgets and quotas that name a key (stored keys, revoked ones included)."""
    return {k["id"]: k["name"] for k in store.list_keys(include_revoked=True)}


def subject_of(row: dict[str, Any], names: dict[str, str]) -> Subject:
    """The subject a logged request was charged to (the ids ``Gateway`` derives from its key and user)."""
    key_id = row.get("key_id")
    name = names.get(key_id) if key_id else None
    if name is None and isinstance(key_id, str):
        name = key_id.removeprefix("static:") if key_id.startswith("static:") else key_id
    return Subject(row.get("tenant") or "default", row.get("user"), key_id, name)


async def rebuild(state: State, store: SQLiteStore, budgets: Budgets, quotas: Quotas,
                  now: float | None = None) -> dict[str, int]:
    """Seed the counters from the log; returns what was seeded (subjects, nano-USD, tokens) for the log line."""
    seeded = {"budget_subjects": 0, "nusd": 0, "quota_subjects": 0, "tokens": 0}
    if not budgets.budgets and not any(r.tpm for r in quotas.rules):
        return seeded
    if not await state.compare_and_set(REBUILT_KEY, None, str(time.time())):
        return seeded  # a shared state that outlived this process already holds the counters
    now = time.time() if now is None else now
    names = await asyncio.to_thread(key_names, store)
    queries: dict[tuple[float, bool], list[dict[str, Any]]] = {}

    async def rows(since: float, per_second: bool) -> list[dict[str, Any]]:
        if (since, per_second) not in queries:
            queries[since, per_second] = await asyncio.to_thread(store.spend_since, since, per_second=per_second)
        return queries[since, per_second]

    for b in budgets.budgets:
        rolling = b.period == "rolling"
        per_who: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for row in await rows(period_start(b, now), rolling):
            who = applies(b, subject_of(row, names))
            if who is not None and row["cost_nusd"]:
                per_who[who].append((float(row["t"]) if rolling else now, int(row["cost_nusd"])))
        for who, spent in per_who.items():
            if rolling:
                spent.sort()
            await budgets.seed(b, who, spent)
            seeded["budget_subjects"] += 1
            seeded["nusd"] += sum(n for _, n in spent)
    for i, rule in enumerate(quotas.rules):
        if rule.tpm is None:
            continue
        start = (now // rule.window_s) * rule.window_s
        per_rule: dict[str, int] = defaultdict(int)
        for row in await rows(start, False):
            who = applies(rule, subject_of(row, names))
            if who is not None and row["tokens"]:
                per_rule[who] += int(row["tokens"])
        for who, tokens in per_rule.items():
            await quotas.seed_tokens(i, rule, who, tokens, now)
            seeded["quota_subjects"] += 1
            seeded["tokens"] += tokens
    if seeded["budget_subjects"] or seeded["quota_subjects"]:
        log.info("rebuilt spend from the request log: $%s over %d budget subjects, %d tokens over %d quota "
                 "subjects", from_nano(seeded["nusd"]).normalize(), seeded["budget_subjects"], seeded["tokens"],
                 seeded["quota_subjects"])
    return seeded
